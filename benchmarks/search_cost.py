"""What a search costs: trials of one network fused, and a pruned search, against one trial of the same spec.

A table of 5,000 rows × 20 features with a nonlinear target (regression), an MLP [64, 32], 100 epochs with
a cosine schedule (no early stopping, so every trial trains what it is asked to), the table defaults
otherwise (Adam, minibatches of 32).

Why the schedule: without one, on this table, the best trial after 100 epochs (learning rate 0.003) trails
the faster ones (0.01) at every rung up to epoch 36, and successive halving's best ended 12% behind the
unpruned best (measured, min_epochs 2 to 20): the short-horizon bias any one bracket of halving has. With the
rate annealed over the fixed budget, as a practitioner runs a fixed-budget search, the early ranking
holds. Every figure is a whole `trainflow run --json --no-cache` command in its own process, as a user waits
for it, against a running Prefect server (started here, as `trainflow server start` would be); the train
task's own seconds (from the run's record) are printed beside it.

- one trial: the spec without a sweep;
- 16 fused trials: learning rate × weight decay, 4 × 4, one network step with a trial axis;
- separate trials (`sweep.fuse: false`), 4 of the 16, each its own training: what 16 would cost, scaled;
- 64 configurations with halving (factor 3, first rung at 4 epochs): rungs at 4, 12, 36, 100 epochs;
- the same 64 trained to the end without pruning, to compare the best validation loss found;
- 64 configurations that differ in seed too (4 learning rates × 4 weight decays × 4 seeds) with halving: a
  seed gives each trial its own split, shuffles and initial weights, all on the trial axis, so the 64 are one
  fused group (they used to be 4 groups of 16, one per seed).

Bars: 16 fused ≤ 3× one trial; the pruned 64 ≤ 3× one trial, its best val_loss within 1% of the unpruned best;
the pruned 64 with seeds ≤ 3× one trial.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, TRAINFLOW, table, write_section

BASE = """\
name: {name}
seed: 1
data: {{kind: csv, path: wide.csv, target: y}}
model: {{kind: mlp, hidden: [64, 32], activation: relu}}
training: {{epochs: 100, early_stopping: null, lr_schedule: {{kind: cosine}}}}
"""
GRID16 = "  grid: {training.optimizer.learning_rate: [0.0003, 0.001, 0.003, 0.01], " \
         "training.optimizer.options.weight_decay: [0.0, 0.0001, 0.001, 0.01]}\n  metric: val_loss\n"
GRID64 = "  grid: {training.optimizer.learning_rate: [0.0003, 0.001, 0.003, 0.01], " \
         "training.optimizer.options.weight_decay: [0.0, 0.0001, 0.001, 0.01], model.dropout: [0.0, 0.05, 0.1, 0.2]}\n" \
         "  metric: val_loss\n"
GRID64_SEEDS = "  grid: {training.optimizer.learning_rate: [0.0003, 0.001, 0.003, 0.01], " \
               "training.optimizer.options.weight_decay: [0.0, 0.0001, 0.001, 0.01], seed: [1, 2, 3, 4]}\n" \
               "  metric: val_loss\n"
HALVING = "  prune: {kind: halving, min_epochs: 4, factor: 3}\n"
SEPARATE4 = "  grid: {training.optimizer.learning_rate: [0.0003, 0.001, 0.003, 0.01]}\n  metric: val_loss\n  fuse: false\n" \
            "  concurrency: 1\n"


def _table(path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 20))
    y = np.sin(x[:, 0]) * 3 + x[:, 1] * x[:, 2] + 0.5 * x[:, 3:8].sum(axis=1) + 0.3 * rng.normal(size=5000)
    path.write_text(",".join([f"f{i}" for i in range(20)] + ["y"]) + "\n"
                    + "".join(",".join(f"{v:.5f}" for v in (*row, t)) + "\n" for row, t in zip(x, y)))


def _run(folder: Path, name: str, env: dict, sweep: str = "") -> tuple[float, float, dict]:
    spec = folder / f"{name}.yaml"
    spec.write_text(BASE.format(name=name) + (f"sweep:\n{sweep}" if sweep else ""))
    started = time.perf_counter()
    out = subprocess.run([*TRAINFLOW, "run", str(spec), "--json", "--no-cache", "--artifacts", str(folder / "art")],
                         capture_output=True, text=True, cwd=ROOT, check=True, env=env)
    wall = time.perf_counter() - started
    result = json.loads(out.stdout)
    tasks = json.loads((Path(result["path"]) / "manifest.json").read_text())["tasks"]
    seconds = sum(t.get("seconds") or 0.0 for t in tasks if t["name"] == "train" or t["name"].startswith(("rung", "fused",
                                                                                                           "trial-")))
    return wall, seconds, result


def main() -> None:
    from orchestration import start_server

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _table(folder / "wide.csv")
        proc, url = start_server(folder / "home")
        env = {**{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}, "PREFECT_HOME": str(folder / "home"),
               "PREFECT_API_URL": url}
        try:
            _run(folder, "warmup", env)  # the server's first requests and the file system's caches
            one_wall, one_train, one = _run(folder, "one", env)
            fused_wall, fused_train, fused = _run(folder, "fused16", env, GRID16)
            sep_wall, sep_train, sep = _run(folder, "separate4", env, SEPARATE4)
            pruned_wall, pruned_train, pruned = _run(folder, "halving64", env, GRID64 + HALVING)
            full_wall, full_train, full = _run(folder, "full64", env, GRID64)
            seeds_wall, seeds_train, seeds = _run(folder, "seeds64", env, GRID64_SEEDS + HALVING)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    best = lambda result: result["best"]["metrics"]["val_loss"]  # noqa: E731
    gap = best(pruned) / best(full) - 1
    pruned_count = lambda result: sum(t["state"] == "Pruned" for t in result["trials"])  # noqa: E731
    rows = [["one trial", f"{one_wall:.1f}", f"{one_train:.1f}", "1x", ""],
            ["16 fused trials", f"{fused_wall:.1f}", f"{fused_train:.1f}", f"**{fused_wall / one_wall:.2f}x**",
             f"train {fused_train / max(one_train, 1e-9):.2f}x; {fused['path_used']}"],
            ["4 separate trials (x4 for 16)", f"{sep_wall:.1f}", f"{sep_train:.1f}",
             f"{4 * sep_wall / one_wall:.1f}x (scaled)", sep["path_used"]],
            ["64 configurations, halving", f"{pruned_wall:.1f}", f"{pruned_train:.1f}", f"**{pruned_wall / one_wall:.2f}x**",
             f"best val_loss {best(pruned):.4g}, {pruned_count(pruned)} pruned"],
            ["the same 64 to the end", f"{full_wall:.1f}", f"{full_train:.1f}", f"{full_wall / one_wall:.2f}x",
             f"best val_loss {best(full):.4g}; halving's best is {100 * gap:+.2f}%"],
            ["64 configurations with 4 seeds, halving", f"{seeds_wall:.1f}", f"{seeds_train:.1f}",
             f"**{seeds_wall / one_wall:.2f}x**", f"{len(seeds['groups'])} fused group(s), {pruned_count(seeds)} pruned; "
                                                  f"best val_loss {best(seeds):.4g}"]]
    write_section("Search cost", table(["5,000 × 20 table, MLP [64, 32], 100 epochs", "command s", "train s",
                                        "whole command / one trial", "note"], rows)
                  + "\n\nEvery command against a running Prefect server. Bars: 16 fused ≤ 3x one trial; 64 with halving "
                    "≤ 3x one trial and its best val_loss within 1% of the unpruned best; 64 with 4 seeds and halving "
                    "≤ 3x one trial (seeds fuse: each trial's own split, shuffles and initial weights ride on the "
                    "trial axis).")


if __name__ == "__main__":
    main()
