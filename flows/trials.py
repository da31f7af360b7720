"""Sweep trials without Prefect or TensorFlow: expansion of a `sweep:` into trial specs, and whether they fuse.

Kept light so `trainflow plan` can list a sweep's trials and their cache state instantly.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any, Optional

from flows.loader import trial_spec
from flows.plan import code_version, compile_plan
from flows.spec import Spec, canonical_hash

#: Paths fused trials may differ in; everything else must be identical across them.
FUSABLE_PATHS = ("training.optimizer.learning_rate", "model.init.w", "model.init.b", "training.epochs")


@dataclass
class Trial:
    id: str
    values: dict[str, Any]
    spec: Spec
    key: Optional[str]  # the trial experiment's fingerprint; None when not cacheable


def expand(spec: Spec) -> list[Trial]:
    """Every grid combination (times every random draw), in a stable order, as validated trial specs."""
    sweep = spec.sweep
    grid_paths = sorted(sweep.grid)
    points = [dict(zip(grid_paths, combo)) for combo in itertools.product(*(sweep.grid[p] for p in grid_paths))]
    if sweep.random:
        rng = random.Random(sweep.random.seed)
        draws = [{path: _draw(rng, param) for path, param in sorted(sweep.random.params.items())}
                 for _ in range(sweep.random.trials)]
        points = [{**point, **draw} for point in points for draw in draws]
    trials = []
    for values in points:
        trial_id = "t" + canonical_hash(values)[:8]
        data = trial_spec(spec, {**values, "name": f"{spec.name[:53]}-{trial_id}"}, source=f"sweep trial {values}")
        trials.append(Trial(trial_id, values, data, compile_plan(data).fingerprint))
    return trials


def _draw(rng: random.Random, param) -> Any:
    if param.kind == "choice":
        return rng.choice(param.values)
    if param.kind == "int":
        return rng.randint(int(param.low), int(param.high))
    if param.kind == "loguniform":
        return math.exp(rng.uniform(math.log(param.low), math.log(param.high)))
    return rng.uniform(param.low, param.high)


def fusable(spec: Spec, trials: list[Trial]) -> tuple[bool, str]:
    """Whether the fused path applies, and why (or why not), in words for the report."""
    if not spec.sweep.fuse:
        return False, "sweep.fuse is false"
    if spec.sweep.runner.kind == "dask":
        return False, "runner is dask: trials are spread over its workers"
    first = trials[0].spec
    if first.model.kind not in ("linear", "keras_linear"):
        return False, f"model.kind '{first.model.kind}' is not linear"
    if first.training.trainer != "manual":
        return False, "the keras trainer trains one model per fit"
    if first.training.optimizer.kind != "sgd" or first.training.optimizer.options:
        return False, "only plain SGD (the guide's assign_sub) is fused"
    if first.training.batch_size is not None or first.training.shuffle:
        return False, "minibatches are not fused"
    swept = set(trials[0].values)
    other = sorted(swept - set(FUSABLE_PATHS))
    if other:
        return False, f"trials differ in {other}, not only in {list(FUSABLE_PATHS)}"
    return True, f"trials differ only in {sorted(swept)}: one compiled program with a trial axis"


def fused_key(trials: list[Trial]) -> Optional[str]:
    """Cache key of a fused run: its trials' keys and the fused trainer's code version."""
    if not all(t.key for t in trials):
        return None
    return canonical_hash({"trials": [t.key for t in trials], "code": code_version(("tasks.fused",))})
