"""Checkpoint cost: saving the model of a wide table (256 numeric columns, the default MLP) in every format.

The figure is the checkpoint task's seconds as the version's manifest records them, from a whole `trainflow
run` against a running Prefect server; then, in this process, what each format costs of it on the same
model. Bar: the checkpoint task <= 2 s for this model (issue 27: it took 13.1 s of a 42.5 s run).

Where the time went (measured 2026-12-02 on the shared 2-core machine: 20.1 s before, 0.98 s after):
- the SavedModel export walked and traced a layer per numeric column (a `Normalization` each, 256 of them,
  and 256 input layers): now one `Normalization` over the whole vector, and the export tracks only the
  layers that hold weights or lookup tables (`tasks.model.tabular.stateful_layers`);
- Keras 3.15 rebuilt its attribute skip set, a throwaway Layer and its dir(), for every layer it saved in
  `.keras` and `.weights.h5` (it caches the set under a key it never reads): stored where Keras looks
  (`tasks.checkpoint.save.remember_keras_skipsets`).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import TRAINFLOW, table, write_section
from orchestration import start_server, timed

COLUMNS, ROWS = 256, 2000
SPEC = f"name: wide\nseed: 1\ndata: {{kind: csv, path: wide.csv, target: y}}\ntraining: {{epochs: 3}}\n" \
       "plots: {include: [loss]}\n"


def write_table(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, COLUMNS))
    y = x[:, :5].sum(axis=1) + 0.1 * rng.normal(size=ROWS)
    lines = [",".join([*(f"f{i}" for i in range(COLUMNS)), "y"])]
    lines += [",".join(f"{v:.4f}" for v in row) + f",{t:.4f}" for row, t in zip(x, y)]
    (folder / "wide.csv").write_text("\n".join(lines) + "\n")
    spec = folder / "wide.yaml"
    spec.write_text(SPEC)
    return spec


def per_format(spec_path: Path) -> list[list]:
    """Each format's seconds on the spec's model (median of 3), and building the model they are saved from."""
    import tensorflow as tf

    from flows.spec.load import load_spec
    from tasks.checkpoint import save
    from tasks.data.load import load
    from tasks.model import tabular

    spec = load_spec(spec_path)
    schema = load(spec.data, spec.seed).schema
    rows = []
    for fmt in ("build", "keras", "keras_weights", "tf_checkpoint", "saved_model"):
        seconds = []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                if fmt == "build":
                    tabular.build(spec.model, spec.seed, schema)
                else:
                    full, _, core = tabular.build(spec.model, spec.seed, schema)
                    started = time.perf_counter()
                    save.write_table_format(full, schema, fmt, Path(tmp))
                seconds.append(time.perf_counter() - started)
        rows.append([fmt if fmt != "build" else "building the model to save", f"{statistics.median(seconds):.2f}"])
    tf.keras.backend.clear_session()
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = write_table(folder)
        proc, url = start_server(folder / "prefect")
        try:
            env = {**os.environ, "PREFECT_API_URL": url, "TRAINFLOW_ARTIFACTS": str(folder / "artifacts")}
            wall, out = timed([*TRAINFLOW, "run", str(spec), "--json"], env)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        result = json.loads(out)
        manifest = json.loads((Path(result["path"]) / "manifest.json").read_text())
        tasks = {t["name"]: t["seconds"] for t in manifest["tasks"]}
        breakdown = per_format(spec)
    write_section("Checkpoint cost", table(
        ["what (256 numeric columns, MLP [256, 128], 2,000 rows)", "seconds", "bar"],
        [["checkpoint task (manifest), every format", f"**{tasks['checkpoint']:.2f}**", "<= 2 s"],
         *([f"  {what}", s, ""] for what, s in breakdown),
         ["the whole `trainflow run`", f"{wall:.1f}", ""],
         ["its train task", f"{tasks['train']:.2f}", ""]]))


if __name__ == "__main__":
    main()
