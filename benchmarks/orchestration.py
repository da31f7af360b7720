"""Orchestration: `trainflow run` on the guide spec, cold and fully cached, against a plain script doing the
same work, with Prefect's temporary server and with a running `prefect server start`.

Flow overhead = cold run wall time - the plain script's wall time (which pays the same TF and matplotlib
imports and the same compute, and exits the same way). Task compute is the sum of the tasks' own durations
from --json; it includes the TensorFlow import, paid inside the first task. A one-shot process also pays
`import prefect`, which the plain script does not, so that is reported beside it. The second table is the
per-run overhead inside one long-lived process (`warm_overhead.py`): what a notebook or a script calling
`run_spec` repeatedly pays per run once the imports are done (served and worker runs start a process
each). Bars: a cached re-run <= 40% of the cold run with a running server; overhead <= 0.5 s.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import ROOT, TRAINFLOW, table, write_section

BIN = Path(sys.executable).parent
SPEC = ROOT / "specs" / "guide.yaml"


def timed(args: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return time.perf_counter() - started, out.stdout


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_PORT": str(port), "PREFECT_UI_ENABLED": "false"}
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("server did not start")


def measure(label: str, env: dict) -> list:
    with tempfile.TemporaryDirectory() as artifacts:
        env = {**env, "TRAINFLOW_ARTIFACTS": artifacts}
        cold, out = timed([*TRAINFLOW, "run", str(SPEC), "--json"], env)
        compute = sum(t["seconds"] for t in json.loads(out)["tasks"])
        cached, out = timed([*TRAINFLOW, "run", str(SPEC), "--json"], env)
        cached_run = json.loads(out)
        assert {t["state"] for t in cached_run["tasks"] if t["name"] != "publish"} == {"Cached"} and cached_run["reused"]
    prefect_import = timed([sys.executable, "-c", "import prefect"], env)[0] - timed([sys.executable, "-c", "pass"], env)[0]
    plain, _ = timed([sys.executable, str(ROOT / "benchmarks" / "plain_guide.py"), str(SPEC)], env)
    overhead = cold - plain
    return [label, f"{cold:.2f}", f"{cached:.2f}", f"**{cached / cold:.0%}**", f"{plain:.2f}", f"{compute:.2f}",
            f"**{overhead:.2f}**", f"{prefect_import:.2f}", f"{overhead - prefect_import:.2f}"]


def measure_warm(env: dict) -> list:
    with tempfile.TemporaryDirectory() as artifacts:
        _, out = timed([sys.executable, str(ROOT / "benchmarks" / "warm_overhead.py"), str(SPEC)],
                       {**env, "TRAINFLOW_ARTIFACTS": artifacts})
    warm = json.loads(out.strip().splitlines()[-1])
    return ["running server, one long-lived process", f"{warm['plain']:.3f}", f"{warm['flow']:.3f}",
            f"**{warm['flow'] - warm['plain']:.3f}**", f"{warm['cached']:.3f}"]


def main() -> None:
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    rows = []
    with tempfile.TemporaryDirectory() as home:
        rows.append(measure("temporary server", {**base, "PREFECT_HOME": home}))
        proc, url = start_server(Path(home))
        try:
            measure("running server (warm-up)", {**base, "PREFECT_HOME": home, "PREFECT_API_URL": url})
            rows.append(measure("running server", {**base, "PREFECT_HOME": home, "PREFECT_API_URL": url}))
            warm = measure_warm({**base, "PREFECT_HOME": home, "PREFECT_API_URL": url})
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    write_section("Orchestration", table(
        ["one process per run", "cold run s", "cached re-run s", "cached / cold", "plain script s",
         "task compute s", "flow overhead s", "of which import prefect s", "rest s"], rows) + "\n\n" + table(
        ["per run, median of 7", "plain work s", "flow run s", "flow overhead s", "cached re-run s"], [warm]))


if __name__ == "__main__":
    main()
