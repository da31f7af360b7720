"""The work: plain functions and classes for data, models, training, plots, checkpoints and the store.

Nothing here imports Prefect; each piece is callable from a test or a notebook on its own.
"""
