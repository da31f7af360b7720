"""A version's life as Prefect sees it: batch prediction as a flow (`predict.py`) and the events automations
react to (`events.py`)."""
