"""What a run costs as the user meets it, against what its training alone costs.

1. The train task's wall time (as recorded in manifest.json, Prefect task and all) against the compiled
   training loop alone (`tasks.train.trainers.train_manual` in a process that has already imported TensorFlow,
   XLA compilation included on both sides), at 200 and 20,000 epochs of the guide spec. Bar: <= 1.3x.
2. The epoch cost measured from outside: (train task at 2,000 epochs - train task at 10) / 1,990, against
   the guide's own eager loop in the same session. Bar: >= 50x cheaper.
3. `trainflow run specs/guide.yaml` against a running server, against `benchmarks/guide_script.py` (the
   guide's own code as a script). Both are whole processes, median of 5. Bar: <= 1.5x.
4. A cold first `make run` in a fresh clone with a fresh PREFECT_HOME and no server, from the end of the
   venv build (the venv is reused through VENV=) to the published version: reported in seconds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, TRAINFLOW, table, wall, write_section

BIN = Path(sys.executable).parent
SPEC = ROOT / "specs" / "guide.yaml"

LOOP_ONLY = """
import json, sys, time
import tensorflow as tf
from flows.spec.load import load_spec
from tasks.data import load as data
from tasks.model import models
from tasks.train import trainers
spec = load_spec(sys.argv[1], ["training.epochs=" + sys.argv[2]])
dataset = data.load(spec.data, spec.seed).train_data()
model = models.build(spec.model, spec.seed)
started = time.perf_counter()
trainers.train_manual(model, dataset, spec.training, spec.seed)
print(json.dumps(time.perf_counter() - started))
"""

EAGER = """
import json, time
import tensorflow as tf
from flows.spec.load import load_spec
from tasks.data import load as data
spec = load_spec("specs/guide.yaml")
d = data.load(spec.data, spec.seed).train_data()
x, y = tf.constant(d.x), tf.constant(d.y)
w, b = tf.Variable(5.0), tf.Variable(0.0)
def epoch():
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(y - (w * x + b)))
    dw, db = tape.gradient(loss, [w, b])
    w.assign_sub(0.1 * dw); b.assign_sub(0.1 * db)
    float(tf.reduce_mean(tf.square(y - (w * x + b))))
epoch()
best = 1e9
for _ in range(3):
    started = time.perf_counter()
    for _ in range(300):
        epoch()
    best = min(best, (time.perf_counter() - started) / 300)
print(json.dumps(best))
"""


def run_json(args: list[str], env: dict) -> dict:
    out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_seconds(epochs: int, env: dict) -> float:
    result = run_json([*TRAINFLOW, "run", str(SPEC), "--json", "--no-cache", "--set",
                       f"training.epochs={epochs}", "--set", "training.optimizer.learning_rate=0.001"], env)
    return next(t["seconds"] for t in result["tasks"] if t["name"] == "train")


def loop_seconds(epochs: int, env: dict) -> float:
    return run_json([sys.executable, "-c", LOOP_ONLY, str(SPEC), str(epochs)], env) if epochs else 0.0


def first_make_run() -> float:
    """`make run` in a fresh clone, fresh PREFECT_HOME, no server; the venv is this one (built already)."""
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "TRAINFLOW_ARTIFACTS")}
        env.update(PREFECT_HOME=str(Path(tmp) / "home"), VENV=str(BIN.parent))
        return wall(["make", "-C", str(clone), "run"], env)


def main() -> None:
    from orchestration import start_server

    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        proc, url = start_server(home)
        env = {**base, "PREFECT_HOME": str(home), "PREFECT_API_URL": url, "TRAINFLOW_ARTIFACTS": str(Path(tmp) / "a")}
        try:
            train_seconds(10, env)  # warm-up: the server's first requests
            task_rows = []
            for epochs in (200, 20_000):
                task = statistics.median(train_seconds(epochs, env) for _ in range(3))
                loop = statistics.median(loop_seconds(epochs, env) for _ in range(3))
                task_rows.append([f"{epochs:,}", f"{loop:.3f}", f"{task:.3f}", f"**{task / loop:.2f}x**",
                                  "met" if task / loop <= 1.3 else "not met"])
            short = statistics.median(train_seconds(10, env) for _ in range(3))
            long = statistics.median(train_seconds(2_000, env) for _ in range(3))
            outside = (long - short) / 1_990
            eager = run_json([sys.executable, "-c", EAGER], env)
            script = statistics.median(wall([sys.executable, str(ROOT / "benchmarks" / "guide_script.py")], env)
                                       for _ in range(5))
            ours = statistics.median(wall([*TRAINFLOW, "run", str(SPEC), "--no-cache"], env)
                                     for _ in range(5))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    cold = first_make_run()
    write_section("Run cost", "\n\n".join([
        table(["guide spec, epochs", "compiled loop alone s", "train task s (manifest)", "task / loop", "bar 1.3x"],
              task_rows),
        table(["from outside", "ms/epoch", "vs guide eager loop", "bar 50x"],
              [["train task (2,000 - 10 epochs) / 1,990", f"{outside * 1e3:.4f}", f"**{eager / outside:.0f}x**",
                "met" if eager / outside >= 50 else "not met"],
               ["guide's eager loop", f"{eager * 1e3:.3f}", "1x", ""]]),
        table(["whole command, running server, median of 5", "wall s", "ratio", "bar 1.5x"],
              [["benchmarks/guide_script.py (the guide's code)", f"{script:.2f}", "1x", ""],
               ["trainflow run specs/guide.yaml", f"{ours:.2f}", f"**{ours / script:.2f}x**",
                "met" if ours / script <= 1.5 else "not met"]]),
        table(["first run on a fresh clone", "wall s"],
              [["make run: fresh PREFECT_HOME, no server, venv already built", f"**{cold:.1f}**"]]),
    ]))


if __name__ == "__main__":
    main()
