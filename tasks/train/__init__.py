"""Stage 3, training: the `training:` section (`spec.py`), losses and metrics, the one compiled training loop
(`driver.py`) with its pluggable steps (`steps.py`) and the choice between them (`fastpath.py`), both
trainers (`trainers.py`), resumable snapshots (`resume.py`) and TensorBoard events (`tensorboard.py`)."""
