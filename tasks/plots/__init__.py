"""Stage 4a, plots: the `plots:` section (`spec.py`), figures as data (`figures.py`), the plots task that
chooses them (`draw.py`), and the one renderer that draws them at publish time (`render.py`)."""
