"""How a trainflow command process ends once it has loaded TensorFlow or Prefect."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any


def exit_without_teardown(code: Any) -> None:
    """Exit as Python would, minus finalising the heap: after a run, that took ~0.9 s here.

    Interpreter finalisation tears down TensorFlow's and Prefect's objects one by one, for memory the OS
    frees anyway. Everything with an effect still runs first: threading's exit hooks (Prefect drains its
    log and event workers to the server there), atexit handlers, and the stdio flush."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_Finalize runs first
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
