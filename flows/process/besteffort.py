"""What the Prefect UI shows is best effort: a server that fails or hangs never fails finished work.

Progress bars, report and table artifacts, events and the tag-limit lookup are for people watching; the
version on disk is the work. `best_effort(what, call)` runs one such call; the first failure is logged as
one warning line and latches for the process, so later UI calls are skipped instead of each paying the
client's retries against a server that is gone. Calls that a run cannot do without (creating the flow run,
its final state) are Prefect's own, bounded by `flows.api.quiet_defaults`' request time-out and retries.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

_down: list[str] = []  # the first failure's reason, once the server has failed a UI call


def reset() -> None:
    """A new run tries the server again."""
    _down.clear()


def server_down() -> Optional[str]:
    """Why the UI calls stopped (the first failure), or None while the server answers."""
    return _down[0] if _down else None


def short_error(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


def best_effort(what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`call(*args, **kwargs)`, or None when it fails (or an earlier UI call did): logged, never raised."""
    if _down:
        return None
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - whatever the client raises, the work on disk stands
        _down.append(short_error(exc))
        _logger().warning("%s did not reach the Prefect server (%s); the run goes on, and the UI will lack "
                          "what follows", what, _down[0])
        return None


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run: the plain logger
        return logging.getLogger("trainflow")
