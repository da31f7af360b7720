"""The second command on a new machine (issue 27, item 8): on a fresh PREFECT_HOME with nothing running, the
whole wall time of the second `trainflow run` of a small spec, with the background server the first run
starts (today's default) against `--no-server` (Prefect's temporary server in every command, as before).

Each repetition takes a new PREFECT_HOME and artifact root, runs `trainflow run specs/guide.yaml` (the first
command: with the default it starts the server) and then the same spec with `--set training.epochs=20` (the
second command: data and model cached, training and publishing run), both as whole processes; the two modes
alternate, and each repetition's background server is stopped before the next. Reported: the medians.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from common import ROOT, TRAINFLOW, table, wall, write_section

SPEC = ROOT / "specs" / "guide.yaml"
REPEAT = 3


def first_and_second(no_server: bool) -> tuple[float, float]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("PREFECT_API_URL", "PREFECT_UI_URL", "TRAINFLOW_NO_SERVER", "TRAINFLOW_SERVER_IDLE_MINUTES")}
    flag = ["--no-server"] if no_server else []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**base, "PREFECT_HOME": str(Path(tmp) / "home"), "TRAINFLOW_ARTIFACTS": str(Path(tmp) / "artifacts")}
        try:
            first = wall([*TRAINFLOW, "run", str(SPEC), *flag], env)
            second = wall([*TRAINFLOW, "run", str(SPEC), "--set", "training.epochs=20", *flag], env)
        finally:
            subprocess.run([*TRAINFLOW, "server", "stop"], env=env, cwd=ROOT, capture_output=True)
    return first, second


def main() -> None:
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(REPEAT):
        for no_server in (False, True):
            runs[no_server].append(first_and_second(no_server))
    median = {mode: [statistics.median(t[i] for t in times) for i in (0, 1)] for mode, times in runs.items()}
    auto, temporary = median[False], median[True]
    load = os.getloadavg()[0]
    write_section("Background server", table(
        ["fresh PREFECT_HOME, nothing running; whole command, median of 3", "first run s", "second run s",
         "second run vs --no-server"],
        [["default: the first run starts the background server, the second uses it", f"{auto[0]:.2f}",
          f"**{auto[1]:.2f}**", f"**{temporary[1] / auto[1]:.2f}x faster**"],
         ["`--no-server` (before: Prefect's temporary server in each command)", f"{temporary[0]:.2f}",
          f"{temporary[1]:.2f}", "1x"]])
        + f"\n\n`trainflow run specs/guide.yaml`, then the same with `--set training.epochs=20`; load average "
          f"{load:.1f} on {os.cpu_count()} cores when it ended. Each run: "
          + ", ".join(f"{'--no-server' if mode else 'default'} " + " / ".join(f"{a:.1f}+{b:.1f}" for a, b in t)
                      for mode, t in runs.items()) + " s (first+second).")


if __name__ == "__main__":
    main()
