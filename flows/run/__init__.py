"""Running a spec as a Prefect flow: the task graph (`graph.py`), cache keys and plans (`plan.py`), the task
every node runs in (`nodes.py`) through the task cache (`cache.py`), one experiment (`experiment.py`) or a
sweep (`trials.py`, `sweep.py`), publishing (`publish.py`), and the one flow they all enter by (`entry.py`)."""
