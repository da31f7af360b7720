"""What the table defaults cost: the least spec about a table (name, data path, target) against the README's
hand-written recipe (an MLP [32, 16], Keras fit, Adam 0.01, batch 32, cosine schedule, early stopping with
patience 20) on the same file, for a classification and a regression table.

Each run is a whole `trainflow run --json` command in its own process, as a user waits for it (the
temporary Prefect server's start included, the same on both sides); the train task's own seconds, from
the run's record, are printed beside it, with each run's test metric. Bar: the defaults are not bought with
ten times the compute (ratio well under 10x).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from common import ROOT, TRAINFLOW, table, write_section

RECIPE = """\
model: {kind: mlp, hidden: [32, 16], activation: relu}
training: {trainer: keras, optimizer: {kind: adam, learning_rate: 0.01}, epochs: 300, batch_size: 32,
           early_stopping: {monitor: val_loss, patience: 20}, lr_schedule: {kind: cosine}}
"""
TABLES = [("churn", "customers.csv", "churned", "test_accuracy"), ("housing", "housing.csv", "price", "test_r2")]


def run(spec: Path, artifacts: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    out = subprocess.run([*TRAINFLOW, "run", str(spec), "--json", "--no-cache", "--artifacts", str(artifacts)],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return time.perf_counter() - started, json.loads(out.stdout)


def main() -> None:
    rows, ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, file, target, metric in TABLES:
            (folder / file).write_bytes((ROOT / "specs" / "data" / file).read_bytes())
            data = f"data: {{kind: csv, path: {file}, target: {target}}}\n"
            least = folder / f"{name}-least.yaml"
            least.write_text(f"name: {name}-least\n{data}")
            recipe = folder / f"{name}-recipe.yaml"
            recipe.write_text(f"name: {name}-recipe\n{data}{RECIPE}")
            measured = {}
            for label, spec in (("README recipe", recipe), ("least spec (defaults)", least)):
                wall, result = run(spec, folder / "artifacts")
                train = next(t["seconds"] for t in result["tasks"] if t["name"] == "train")
                measured[label] = (wall, train)
                rows.append([f"{name}: {label}", f"{wall:.1f}", f"{train:.2f}", result["metrics"]["epochs"],
                             f"{metric} {result['metrics'][metric]:.3f} (trivial {result['metrics'][f'baseline_{metric}']:.3f})"])
            (wall_r, train_r), (wall_d, train_d) = measured["README recipe"], measured["least spec (defaults)"]
            ratios.append([name, f"**{wall_d / wall_r:.2f}x**", f"{train_d / train_r:.2f}x"])
    write_section("Table defaults", table(["run", "command s", "train task s", "epochs", "test metric"], rows)
                  + "\n\n" + table(["table", "least spec / recipe, whole command", "train task"], ratios)
                  + "\n\nBar: the defaults cost well under 10x the hand-written recipe.")


if __name__ == "__main__":
    main()
