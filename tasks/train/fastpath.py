"""Which training step a run (or a sweep's trials) takes, and why not the faster ones: one function.

The trainer, the sweep and `trainflow plan` all ask `choose_step`, so the answer a user reads in the plan is
the one the run takes. Kept free of TensorFlow so that `plan` answers instantly.

The steps (see `tasks/train/steps.py`):
- "tape": the general GradientTape step; any model, loss, optimizer, batch size.
- "moments": the guide's case at scale: linear models, mse, plain SGD on one full batch of at least
  MIN_MOMENTS_EXAMPLES. The data is read once into six moments and each epoch costs O(1).
- "trials": several linear models trained by plain SGD on one full batch at once, with a leading trial
  axis; a sweep whose trials differ only in FUSABLE_PATHS takes it (with moments at scale).
- "network": a table's network (MLP or linear) with the manual trainer and an optimizer the step implements
  (`NETWORK_OPTIMIZERS`): one run, or a sweep's trials that share its shape, K at once (a sweep's
  Keras-trainer trials too, but for dropout: `fused_network_reason`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from tasks.model.spec import BODY_MODELS, LINEAR_MODELS
from tasks.train.spec import CLIP_OPTIONS

#: Below this many examples the general XLA loop is overhead-bound (a few µs per epoch at N=201), and the
#: guide's own problem keeps running the guide's GradientTape step.
MIN_MOMENTS_EXAMPLES = 65_536
#: Paths fused trials may differ in; everything else must be identical across them.
FUSABLE_PATHS = ("training.optimizer.learning_rate", "model.init.w", "model.init.b", "training.epochs")


@dataclass(frozen=True)
class Choice:
    step: str  # "tape", "moments", "trials", "network" (tables) or "fit" (the keras trainer)
    why: str  # in words, for the run log, the sweep report and `trainflow plan`

    @property
    def fast(self) -> bool:
        return self.step != "tape"


def step_kind(model_kind: str, has_task: bool) -> str:
    """What `choose_step` is asked about: "table" for a Dense network (mlp, linear) on data with a task (its
    encoded inputs), else the model's kind (the guide's models; a layer stack or builder)."""
    return "table" if has_task and model_kind in ("mlp", "linear") else model_kind


def plain_sgd(model_kind: str, training: Any) -> Optional[str]:
    """None when the model is linear and trained by the guide's SGD (optionally clipped) on one full batch,
    else the reason it is not."""
    if model_kind == "table":
        return "a table's model (Keras layers on encoded features)"
    if model_kind in BODY_MODELS:
        return (f"model.kind '{model_kind}' is Keras layers of your choosing, which the GradientTape step trains "
                "as they are (the fused network step does Dense networks: mlp, linear)")
    if model_kind not in LINEAR_MODELS:
        return f"model.kind '{model_kind}' is not linear"
    if training.trainer != "manual":
        return "the keras trainer trains through fit"
    if training.optimizer.kind != "sgd":
        return f"optimizer '{training.optimizer.kind}' is not plain SGD"
    other = sorted(set(training.optimizer.options) - set(CLIP_OPTIONS))
    if other:
        return f"optimizer options {other} need Keras's optimizer (only {', '.join(CLIP_OPTIONS)} are fused)"
    if training.lr_schedule is not None:
        return "lr_schedule needs Keras's optimizer"
    if training.early_stopping is not None:
        return "early stopping runs in the general step"
    if training.batch_size is not None:
        return "minibatches (batch_size is set)"
    if training.shuffle:
        return "shuffle is on"
    return None


#: What the network step (K table networks at once, `tasks/train/network.py`) implements itself: these
#: optimizers, with these of their options; anything else needs Keras's optimizer, in the general step.
NETWORK_OPTIMIZERS = {"sgd": ("momentum", "nesterov", "weight_decay"),
                      "adam": ("beta_1", "beta_2", "epsilon", "weight_decay"),
                      "adamw": ("beta_1", "beta_2", "epsilon", "weight_decay")}


def network_reason(training: Any) -> Optional[str]:
    """None when a table's network trains in the network step (the manual trainer with an optimizer it
    implements), else why not."""
    if training.trainer != "manual":
        return "the keras trainer trains through fit"
    return _optimizer_reason(training)


def _optimizer_reason(training: Any) -> Optional[str]:
    kind = training.optimizer.kind
    if kind not in NETWORK_OPTIMIZERS:
        return f"optimizer '{kind}' needs Keras's optimizer (the network step does {', '.join(NETWORK_OPTIMIZERS)})"
    other = sorted(set(training.optimizer.options) - set(NETWORK_OPTIMIZERS[kind]))
    if other:
        return f"optimizer options {other} need Keras's optimizer"
    return None


def fused_network_reason(resolved: dict, training: Any) -> Optional[str]:
    """None when a sweep's table trial can train fused in the network step, else why not. Keras-trainer trials
    fuse too: fit on a table takes the network step's batches in the network step's order
    (`tasks/train/keras_fit.py`) with the same optimizer arithmetic, so a fused trial equals its lone fit run
    within float rounding (`tests/test_fused_keras.py`), except for dropout: Keras's Dropout layers draw
    their own noise, which the network step cannot replay."""
    kind = resolved["model"]["kind"]
    if kind not in ("mlp", "linear"):
        return (f"model.kind '{kind}' trains alone: the fused network step trains Dense networks (mlp, linear) "
                "K at once; a layer stack or builder's trials are separate tasks, each resumable at a rung")
    reason = _optimizer_reason(training)
    if reason is None and training.trainer == "keras" and resolved["model"].get("dropout"):
        reason = ("the keras trainer's Dropout layers draw their own noise, which the fused network step cannot "
                  "replay (model.dropout: 0, or training.trainer: manual, trains it fused)")
    return reason


def choose_step(model_kind: str, training: Any, examples: Optional[int] = None,
                trials: Optional[Sequence[tuple[dict, str, Any]]] = None, fuse: bool = True,
                runner: str = "thread") -> Choice:
    """The step for one run (`trials` None) or for a sweep's trials, given as (swept values, model kind,
    training section).

    `examples` is the number of training examples when known (a file's length is known only once read);
    None answers for any size and says where the size matters."""
    if trials is not None:
        return _for_trials(trials, examples, fuse, runner)
    if model_kind == "table" and training.trainer == "manual":
        reason = network_reason(training)
        return Choice("tape", f"general GradientTape step: {reason}") if reason else \
            Choice("network", "the network step: the table's layers as batched matmuls with the optimizer in-graph, "
                              "many minibatches and epochs per compiled call")
    if training.trainer == "keras":
        return Choice("fit", "Keras compile/fit on a repeated full batch or minibatches (training.trainer: keras)")
    reason = plain_sgd(model_kind, training) or (None if training.loss.kind in ("mse", "auto") else
                                            f"loss '{training.loss.kind}' is not mse")
    if reason:
        return Choice("tape", f"general GradientTape step: {reason}")
    if examples is None:
        return Choice("moments", f"data moments when there are at least {MIN_MOMENTS_EXAMPLES:,} training "
                                 "examples, else the GradientTape step")
    if examples < MIN_MOMENTS_EXAMPLES:
        return Choice("tape", f"GradientTape step: {examples:,} examples (moments from {MIN_MOMENTS_EXAMPLES:,})")
    return Choice("moments", f"linear model, mse, full batch of {examples:,}: trained from one pass of data moments")


def _for_trials(trials: Sequence[tuple[dict, str, Any]], examples: Optional[int], fuse: bool,
                runner: str) -> Choice:
    if not fuse:
        return Choice("tape", "separate trials: sweep.fuse is false")
    if runner == "dask":
        return Choice("tape", "separate trials: runner is dask, trials are spread over its workers")
    values, model_kind, training = trials[0]
    reason = plain_sgd(model_kind, training)
    if reason:
        return Choice("tape", f"separate trials: {reason}")
    swept = sorted({path for v, _, _ in trials for path in v})
    other = [path for path in swept if path not in FUSABLE_PATHS]
    if other:
        return Choice("tape", f"separate trials: they differ in {other}, not only in {list(FUSABLE_PATHS)}")
    scale = "" if examples is None or examples < MIN_MOMENTS_EXAMPLES or training.loss.kind not in ("mse", "auto") else \
        ", from data moments"
    return Choice("trials", f"fused: trials differ only in {swept}, trained at once with a trial axis{scale}")


#: Settings the trials of one table network may each have their own of and still train fused (the network
#: step keeps one value per trial; a seed gives a trial its own split, shuffles, noise and initial weights);
#: every other setting must be the same across a fused group.
FUSABLE_NETWORK_PATHS = (
    "seed", "training.optimizer.learning_rate", "training.epochs", "model.dropout", "model.init_seed",
    "training.optimizer.options.weight_decay", "training.optimizer.options.beta_1",
    "training.optimizer.options.beta_2", "training.optimizer.options.epsilon", "training.optimizer.options.momentum",
    "training.lr_schedule.decay_epochs", "training.lr_schedule.decay_rate", "training.lr_schedule.alpha",
    "training.early_stopping.patience", "training.early_stopping.min_delta")
#: Sections that do not change how a trial trains (what it is called, what it draws and saves, what runs it).
NOT_TRAINING = ("name", "description", "plots", "checkpoint", "schedule", "promote", "sweep")


def network_groups(trials: Sequence[tuple[Any, dict, Any]]) -> tuple[list[tuple[list, str]], list[tuple[Any, str]]]:
    """A table sweep's trials, given as (trial, resolved spec, training section), as fused groups (members, why:
    one per network shape and fixed settings, naming what sets each group apart from the others) and
    separate trials (trial, why not fused)."""
    groups: dict[str, list] = {}
    separate = []
    for trial, resolved, training in trials:
        reason = fused_network_reason(resolved, training)
        if reason:
            separate.append((trial, f"separate: {reason}"))
            continue
        fixed = json.loads(json.dumps({k: v for k, v in resolved.items() if k not in NOT_TRAINING}))
        for path in FUSABLE_NETWORK_PATHS:
            *parents, last = path.split(".")
            node = fixed
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(last, None)
        groups.setdefault(json.dumps(fixed, sort_keys=True), []).append((trial, resolved))
    flat = {key: _flatten(json.loads(key)) for key in groups}
    apart = sorted({path for f in flat.values() for path in f
                    if len({json.dumps(g.get(path), sort_keys=True) for g in flat.values()}) > 1})
    out = []
    for key, members in groups.items():
        resolved = [r for _, r in members]
        varying = sorted(path for path in FUSABLE_NETWORK_PATHS if len({json.dumps(_at(r, path)) for r in resolved}) > 1)
        model = resolved[0]["model"]
        shape = f"{model['kind']} {model.get('hidden', [])} {model.get('activation', '')}".rstrip()
        what = f"differ in {', '.join(varying)}" if varying else "differ in nothing it trains"
        split = ("; apart from the other groups by " + ", ".join(f"{path}={json.dumps(flat[key].get(path))}"
                                                                  for path in apart)) if apart else ""
        out.append(([t for t, _ in members], f"fused: {len(members)} trial(s) of one network ({shape}) {what}; "
                                             f"trained at once with a trial axis{split}"))
    return out, separate


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted paths to its leaves (lists are leaves)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def _at(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data
