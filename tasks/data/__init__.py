"""Stage 1, data: the `data:` section (`spec.py`), generated curves and tables (`synthetic.py`), user tables
read with pyarrow (`tables.py`) into columns (`columns.py`), what a file holds and every cell a run could not
use, found before anything runs (`profile.py`, `hygiene.py`), and the data task itself, which splits and
describes (`load.py`)."""
