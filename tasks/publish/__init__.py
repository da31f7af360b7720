"""Stage 5, publish: the immutable numbered store (`store.py`), and what a version folder holds besides
checkpoints and plots: history, metrics, the spec and reports (`report.py`, `sweep_report.py`)."""
