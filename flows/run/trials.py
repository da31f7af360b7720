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
from tasks.data.spec import has_task
from tasks.train.fastpath import Choice, choose_step, network_groups, step_kind


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
    kind = lambda s: step_kind(s.model.kind, has_task(s.data))  # noqa: E731
    return choose_step(kind(spec), spec.training, examples=examples,
                       trials=[(t.values, kind(t.spec), t.spec.training) for t in trials],
                       fuse=spec.sweep.fuse, runner=spec.sweep.runner.kind)


@dataclass
class TrialGroup:
    """Trials that train the same way: "trials" (linear models fused by the guide's SGD), "network" (one table
    network's trials fused in the network step) or "separate" (each its own task)."""

    step: str
    trials: list[Trial]
    why: str


def trial_groups(spec: Spec, trials: list[Trial]) -> list[TrialGroup]:
    """How a sweep's trials train, and why: one fused group per linear sweep or per table network shape, and
    the rest separate (`tasks.train.fastpath` decides what fuses)."""
    if not spec.sweep.fuse or spec.sweep.runner.kind == "dask" or not has_task(spec.data):
        choice = trial_choice(spec, trials)
        return [TrialGroup("trials" if choice.step == "trials" else "separate", trials, choice.why)]
    groups, separate = network_groups([(t, t.spec.resolved(), t.spec.training) for t in trials])
    out = [TrialGroup("network", members, why) for members, why in groups if len(members) > 1]
    separate += [(members[0], "separate: no other trial shares its network's shape and fixed settings")
                 for members, _ in groups if len(members) == 1]
    if separate:
        out.append(TrialGroup("separate", [t for t, _ in separate], separate[0][1]))
    return out


def path_used(groups: list[TrialGroup]) -> str:
    """`fused` when every trial trained in a fused group, `separate` when none did, else `mixed`."""
    fused = {g.step != "separate" for g in groups}
    return "mixed" if len(fused) > 1 else ("fused" if fused == {True} else "separate")


def fused_key(trials: list[Trial]) -> Optional[str]:
    """Cache key of fused training: the trials' train keys and the trainer's code version."""
    keys = [t.plan.key("train") for t in trials]
    if not all(keys):
        return None
    return canonical_hash({"trials": keys, "code": code_version(("tasks.train.trainers",))})
