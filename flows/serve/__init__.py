"""Where runs happen: the local Prefect server (`server.py`), deployments served or on a work pool
(`deploy.py`), and the lanes a deployment's runs are held to (`lanes.py`)."""
