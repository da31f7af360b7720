"""Helpers every stage shares and that depend on no stage: errors, "did you mean", the base of every spec
section, crash-safe file writes, and even thinning of long arrays. Nothing here imports another package of
the project, TensorFlow or Prefect."""
