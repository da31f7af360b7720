"""Sweep trials without Prefect or TensorFlow: expansion of a `sweep:` into trial specs, and how they train.

Kept light so `trainflow plan` can list a sweep's trials and their cache state instantly.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any, Optional

from flows.run.plan import Plan, code_version, compile_plan
from flows.spec import Spec
from flows.spec.load import trial_spec
from tasks.common.hashing import canonical_hash
from tasks.data.spec import is_table
from tasks.train.fastpath import Choice, choose_step


@dataclass
class Trial:
    id: str
    values: dict[str, Any]
    spec: Spec
    plan: Plan

    @property
    def key(self) -> Optional[str]:
        """The trial experiment's fingerprint; None when not cacheable."""
        return self.plan.fingerprint


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
        trials.append(Trial(trial_id, values, data, compile_plan(data)))
    return trials


def _draw(rng: random.Random, param) -> Any:
    if param.kind == "choice":
        return rng.choice(param.values)
    if param.kind == "int":
        return rng.randint(int(param.low), int(param.high))
    if param.kind == "loguniform":
        return math.exp(rng.uniform(math.log(param.low), math.log(param.high)))
    return rng.uniform(param.low, param.high)


def trial_choice(spec: Spec, trials: list[Trial]) -> Choice:
    """Fused or separate, and why: `tasks.train.fastpath.choose_step` over the trials."""
    examples = getattr(spec.data, "num_examples", None)
    if examples is not None:
        examples = examples - int(examples * spec.data.validation_split)
    kind = lambda s: "table" if is_table(s.data) else s.model.kind  # noqa: E731
    return choose_step(kind(spec), spec.training, examples=examples,
                       trials=[(t.values, kind(t.spec), t.spec.training) for t in trials],
                       fuse=spec.sweep.fuse, runner=spec.sweep.runner.kind)


def fused_key(trials: list[Trial]) -> Optional[str]:
    """Cache key of fused training: the trials' train keys and the trainer's code version."""
    keys = [t.plan.key("train") for t in trials]
    if not all(keys):
        return None
    return canonical_hash({"trials": keys, "code": code_version(("tasks.train.trainers",))})
