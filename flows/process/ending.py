"""How a trainflow command process ends once it has loaded TensorFlow or Prefect: without finalising the heap.

Interpreter finalisation tears down TensorFlow's and Prefect's objects one by one, for memory the OS frees
anyway: ~0.9 s per command here. `install()` registers an exit handler before anything else is imported,
so it runs last: after threading's shutdown (where Prefect drains its log and event workers to the
server) and after every other atexit handler (which stop a temporary server). It then flushes stdio and
ends the process with the exit code, skipping only the teardown. Public API only: `atexit` and `os._exit`.
"""

from __future__ import annotations

import atexit
import os
import sys

_HEAVY = ("tensorflow", "prefect")
_code = [0]


def _finish() -> None:
    if not any(name in sys.modules for name in _HEAVY):
        return  # a light command: let Python finish as usual
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_code[0])


def install() -> None:
    """Call first thing in the command's main: later atexit handlers run before this one."""
    atexit.register(_finish)


def set_exit_code(code) -> None:
    """The code `_finish` exits with: what `SystemExit` carried (a message counts as 1, as in Python)."""
    _code[0] = code if isinstance(code, int) else (0 if code is None else 1)
