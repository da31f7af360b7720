"""Stage 4b, checkpoints: the `checkpoint:` section (`spec.py`) and the formats a trained model is saved in,
each loadable with plain TensorFlow or Keras (`save.py`)."""
