"""Named points where a fault test can stop or kill a command, so each crash window is tested for real.

`point("publish-renamed")` does nothing unless `TRAINFLOW_FAULT` names that point (one environment lookup):

    TRAINFLOW_FAULT=publish-renamed:kill    SIGKILL this process there
    TRAINFLOW_FAULT=publish-build:pause     create $TRAINFLOW_FAULT_DIR/<point> and wait until it is removed

Several points: `a:kill,b:pause`. The points are listed where they are placed (grep `faults.point`).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def point(name: str) -> None:
    wanted = os.environ.get("TRAINFLOW_FAULT")
    if not wanted:
        return
    for item in wanted.split(","):
        where, _, action = item.partition(":")
        if where != name:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "pause":
            marker = Path(os.environ.get("TRAINFLOW_FAULT_DIR", ".")) / name
            marker.write_text(str(os.getpid()))
            while marker.exists():
                time.sleep(0.05)
