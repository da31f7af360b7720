"""The safe task cache against the pickled one it replaced, side by side in one run.

Until commit 82870fa the task cache was Prefect's own result persistence: cloudpickled records, which a
writer of the artifact root could make run code. Now it is `tasks/cache/safedata.py` (JSON and NumPy arrays,
sha256-checked) behind trainflow's own cache (`flows/run/cache.py`). Measured here:

1. A fully cached re-run, `trainflow run` as a user runs it against a running server, of the guide and of
   the churn table (median of 5), by the code of 82870fa (a git worktree of it) and by this checkout.
   Bar: within 10% of the pickled cache's time.
2. The serialisation alone, for the cached results of those runs: safedata encode + decode against
   cloudpickle dumps + loads of the same objects.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, best_of, table, write_section

BASELINE = "82870fa"  # the last commit with Prefect's pickled result persistence
SPECS = ["specs/guide.yaml", "specs/churn.yaml"]


def cached_rerun(code: Path, spec: str, env: dict) -> float:
    """Median wall time of a fully cached `trainflow run` with `code` (after one cold run to fill the cache)."""
    env = {**env, "PYTHONPATH": str(code)}
    command = [sys.executable, "-m", "flows.cli", "run", str(code / spec)]
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=code)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=code)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def serialisation(artifacts: Path) -> tuple[float, float, int, int]:
    """(safedata s, cloudpickle s, safedata bytes, cloudpickle bytes) for every entry of a filled cache."""
    import cloudpickle

    from tasks.cache import safedata

    values = [safedata.decode(p.read_bytes()) for p in (artifacts / ".cache" / "results").iterdir()]
    safe = best_of(lambda: [safedata.decode(safedata.encode(v)) for v in values], 5)
    pickled = best_of(lambda: [cloudpickle.loads(cloudpickle.dumps(v)) for v in values], 5)
    return (safe, pickled, sum(len(safedata.encode(v)) for v in values),
            sum(len(cloudpickle.dumps(v)) for v in values))


def main() -> None:
    from orchestration import start_server

    base = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "TRAINFLOW_ARTIFACTS")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        baseline = tmp / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(baseline), BASELINE],
                       check=True)
        proc, url = start_server(tmp / "home")
        try:
            for spec in SPECS:
                times = {}
                for label, code in (("pickled (82870fa)", baseline), ("safe (this checkout)", ROOT)):
                    env = {**base, "PREFECT_HOME": str(tmp / "home"), "PREFECT_API_URL": url,
                           "TRAINFLOW_ARTIFACTS": str(tmp / f"artifacts-{len(times)}-{Path(spec).stem}")}
                    times[label] = cached_rerun(code, spec, env)
                old, new = times["pickled (82870fa)"], times["safe (this checkout)"]
                rows.append([spec, f"{old:.2f}", f"{new:.2f}", f"**{new / old:.2f}x**",
                             "met" if new / old <= 1.10 else "not met"])
            safe, pickled, safe_bytes, pickled_bytes = serialisation(tmp / "artifacts-1-churn")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], check=False)
    write_section("Safe cache", table(
        ["fully cached `trainflow run`, running server, median of 5", "pickled cache s", "safe cache s", "ratio",
         "bar 1.10x"], rows) + "\n\n" + table(
        ["the churn run's cached results", "encode + decode ms", "bytes"],
        [["cloudpickle (the old format)", f"{pickled * 1e3:.1f}", f"{pickled_bytes:,}"],
         ["tasks/cache/safedata.py", f"{safe * 1e3:.1f}", f"{safe_bytes:,}"]]))


if __name__ == "__main__":
    main()
