"""After publishing: named aliases with their history and the promotion gate (`aliases.py`), and how every
version of a spec compares (`compare.py`)."""
