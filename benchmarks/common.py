"""Shared helpers: machine info, timing, and writing a benchmark's section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
#: Each benchmark chooses its Prefect server itself (a running one, or Prefect's temporary one); a command left
#: to start a background server would measure that instead and leave it running. `second_run.py` unsets it.
os.environ.setdefault("TRAINFLOW_NO_SERVER", "1")
REPORT = ROOT / "docs" / "benchmarks.md"
#: The `trainflow` command of this checkout (not whichever one the venv's console script points at), so a
#: benchmark run from a copy of the repository measures that copy's code.
TRAINFLOW = [sys.executable, "-m", "flows.cli"]
os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")


def machine() -> str:
    versions = ", ".join(f"{d} {metadata.version(d)}" for d in ("tensorflow", "keras", "prefect", "numpy"))
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {versions}"


def best_of(fn, repeat: int = 3) -> float:
    """Fastest wall time of `repeat` calls, in seconds: the least disturbed by a noisy shared machine."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def write_section(name: str, body: str) -> None:
    """Replace this benchmark's section of docs/benchmarks.md, keeping the others."""
    text = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n\nWritten by `make bench`; each section by its script.\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n## {name}\n\n_{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}_\n\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    REPORT.write_text(text)
    print(body)


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def wall(args: list[str], env: dict) -> float:
    """The whole command's wall seconds, as a user waits for it; RuntimeError with its stderr's end if it fails."""
    started = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return time.perf_counter() - started
