"""How task results are kept in the cache: bytes whose loading runs no code (`safedata.py`), signed with the
user's key (`signing.py`)."""
