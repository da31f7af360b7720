"""Stage 1, data: the `data:` section (`spec.py`), generated curves and tables (`synthetic.py`), user tables
read with pyarrow (`tables.py`), what a file holds read cheaply for validation (`profile.py`), and the data
task itself, which splits and describes (`load.py`)."""
