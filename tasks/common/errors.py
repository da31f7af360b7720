"""The failures a run reports to its user in one line, without a traceback unless `--debug`."""

from __future__ import annotations


class RunError(Exception):
    """A failure whose message says everything a user needs (which epoch diverged, which file or row is bad);
    shown without a traceback unless --debug."""


class DataError(RunError):
    """A data file that cannot be used; the message names the file and, where it can, the row or column."""


class TransientDataError(DataError):
    """A data file that could not be read just now (missing, locked, I/O error): worth a retry."""
