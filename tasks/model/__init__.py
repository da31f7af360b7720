"""Stage 2, model: the `model:` section (`spec.py`), the guide's models and the MLP on one input
(`models.py`), and a table's Keras model with its preprocessing inside (`tabular.py`)."""
