"""The whole spec, composed: the sections each task reads (declared beside their work in `tasks/*/spec.py`)
plus the orchestration sections (`flows/spec/orchestration.py`). One pydantic model gives validation,
defaults, the JSON Schema and the field documentation.

Every field is declared once, with its type, default, limits and description. The CLI, the README and the
tests read defaults and limits from these classes instead of restating them. This package stays light: it
never imports TensorFlow, so `validate`, `plan` and `schema` start instantly.
"""

from __future__ import annotations

from typing import Any, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from flows.spec import defaults
from flows.spec.orchestration import PredictSpec, PromoteSpec, ScheduleSpec, SweepSpec
from tasks.checkpoint.spec import CheckpointSpec
from tasks.common.hashing import canonical_hash
from tasks.common.sections import CrossFieldError, Section
from tasks.common.suggest import did_you_mean
from tasks.data.spec import TENSOR_KINDS, DataSpec, has_task, is_table
from tasks.model.spec import BODY_MODELS, KERAS_MODELS, LINEAR_MODELS, ModelSpec
from tasks.plots.spec import CLASSIFICATION_PLOTS, LINE_PLOTS, REGRESSION_PLOTS, PlotSpec
from tasks.publish.store import NAME_PATTERN
from tasks.train.spec import TASK_METRICS, TrainingSpec


class ScoringSpec(Section):
    """A batch prediction job: score a file with a published version, on demand or on a schedule."""

    model_config = ConfigDict(extra="forbid", strict=True, title="trainflow scoring spec")

    name: str = Field(pattern=f"^{NAME_PATTERN}$", description="Slug naming the job and its deployment.")
    description: str = Field("", max_length=2000, description="Free text shown in the deployment.")
    predict: PredictSpec = Field(description="What to score, with which version, and where the results go.")
    schedule: list[ScheduleSpec] = Field([], description="Schedules for `trainflow serve` / `deploy`.")

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def spec_hash(self) -> str:
        return canonical_hash(self.resolved())


class Spec(Section):
    """A whole experiment: what to learn from, what to fit, how, and what to keep."""

    model_config = ConfigDict(extra="forbid", strict=True, title="trainflow experiment spec")

    name: str = Field(
        pattern=f"^{NAME_PATTERN}$",
        description="Slug naming the artifact series: lowercase letters, digits, '-' and '_', at most 64.",
    )
    description: str = Field("", max_length=2000, description="Free text shown in reports.")
    seed: Optional[int] = Field(
        42, ge=0, le=2**31 - 1,
        description="Seeds data noise, splits, initialisation and shuffles. null makes the run uncacheable.",
    )
    data: DataSpec = Field(description="Where the examples come from: the guide's one input and one target, or a "
                           "table (data.target names the column to predict).")
    model: Optional[ModelSpec] = Field(
        None, description="What is fitted. Required for the guide's one-input data; a table's default is an MLP "
        "of two relu layers of 64.",
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="How it is fitted.")
    plots: PlotSpec = Field(default_factory=PlotSpec, description="The matplotlib figures to draw.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="How the trained model is saved.")
    sweep: Optional[SweepSpec] = Field(None, description="Run many trials of this spec and compare them.")
    schedule: list[ScheduleSpec] = Field(
        [], description="Schedules for `trainflow serve` / `deploy`; empty means runs only when asked."
    )
    promote: Optional[PromoteSpec] = Field(None, description="Move an alias to each new version that beats its holder.")
    #: What loading found in the spec's data besides errors (`flows.spec.datacheck.Findings`): warnings and a
    #: summary `validate` prints. Not part of the spec: never dumped, hashed or keyed.
    _data_findings: Any = PrivateAttr(default=None)
    #: What `flows.spec.defaults.fill` gave the spec (`table_defaults`); like the findings, not part of the spec.
    _table_defaults: dict = PrivateAttr(default_factory=dict)
    #: The document the spec was read from (`flows.spec.load.load_spec`), for positions of later checks; and
    #: whether its model was built on its data's shapes (`flows.spec.build.check_build`). Not part of the spec.
    _document: Any = PrivateAttr(default=None)
    _built: bool = PrivateAttr(default=False)
    _images_check: Any = PrivateAttr(default=None)  # a deployment's lanes check of each path an images index names

    @property
    def data_findings(self):
        return self._data_findings

    @property
    def table_defaults(self) -> dict[str, Any]:
        """The dotted paths a table's defaults filled in, with their values: what the spec left unsaid."""
        return dict(self._table_defaults)

    @model_validator(mode="wrap")
    @classmethod
    def _defaults_that_fit_the_data(cls, raw: Any, handler) -> "Spec":
        """A table's unsaid settings are a practitioner's, not the guide's (`flows.spec.defaults`)."""
        filled = defaults.fill(raw)
        spec = handler(filled)
        spec._table_defaults = defaults.unsaid(raw, filled) if isinstance(raw, dict) else {}
        return spec

    @model_validator(mode="after")
    def _parts_fit_together(self) -> "Spec":
        table = has_task(self.data)  # a table or arrays: a target with a task, held-out splits, the task's metrics
        if self.model is None:
            raise CrossFieldError([("model", "required for the guide's one-input data: give model.kind (linear, "
                                             "keras_linear or mlp)")])
        problems = []
        keras_models = ("linear", "mlp", *BODY_MODELS) if table else KERAS_MODELS
        if table and self.model.kind == "keras_linear":
            problems.append(("model.kind", "'keras_linear' is the guide's one-input model; for a table or arrays use "
                                           "'linear' (one weight per input), 'mlp', 'keras' or 'python'"))
        if not table and self.model.kind in BODY_MODELS:
            problems.append(("model.kind", f"'{self.model.kind}' builds on data with a target (a table's "
                                           "data.target, or data.kind: arrays); the guide's one number x takes "
                                           "linear, keras_linear or mlp"))
        if self.training.trainer == "keras" and self.model.kind not in keras_models:
            problems.append(("training.trainer", f"'keras' needs a Keras model (one of {list(keras_models)}), "
                                                 f"got model.kind '{self.model.kind}'"))
        for fmt in self.checkpoint.formats or ():
            if fmt in ("keras_weights", "keras") and self.model.kind not in keras_models:
                problems.append(("checkpoint.formats", f"'{fmt}' needs a Keras model (one of "
                                                       f"{list(keras_models)}), got model.kind '{self.model.kind}'"))
        data = self.data
        if data.test_split + data.validation_split >= 1:
            problems.append(("data.test_split", f"test_split + validation_split must be < 1 (some rows must be left "
                                                f"to train on), got {data.test_split} + {data.validation_split}"))
        if not table:
            for field, value, default in (("test_split", data.test_split, 0.0), ("task", data.task, "auto")):
                if value not in (default, "regression"):
                    problems.append((f"data.{field}", f"needs a table: name a target column (data.target), got "
                                                      f"{field} {value!r} for one input and one target"))
            if self.training.loss.kind == "cross_entropy":
                problems.append(("training.loss.kind", "'cross_entropy' needs a classification table "
                                                       "(data.target), the guide's data is regression"))
        if not table:
            for field, hint in (("normalize", "its w and b stay in the data's units"),
                                ("impute", "an empty cell there fails the run, naming its row")):
                if getattr(data, field):
                    problems.append((f"data.{field}", f"applies to tables only; the guide's one-input data is never "
                                                      f"{'standardised' if field == 'normalize' else 'imputed'} "
                                                      f"({hint}). To use it, make the file a table: data.target "
                                                      f"names the column to predict, the others are features"))
            if getattr(data, "exclude", None):
                problems.append(("data.exclude", "applies to tables only (name the column to predict in data.target)"))
        if data.kind in TENSOR_KINDS and data.impute:
            problems.append(("data.impute", f"applies to tables (empty cells); {data.kind} have no empty cells to "
                                            "fill"))
        if getattr(data, "exclude", None) and is_table(data):
            if data.features is not None:
                problems.append(("data.exclude", "give features (the columns to use) or exclude (the columns not "
                                                 "to use), not both"))
            if data.target in data.exclude:
                problems.append(("data.exclude", f"the target '{data.target}' is never a feature; leave it out "
                                                 f"of exclude"))
        for kind in self.plots.include or ():
            if kind in LINE_PLOTS and table:
                problems.append(("plots.include", f"'{kind}' plots one input against the target; this data is a "
                                                  f"table (use loss, metrics, {', '.join(REGRESSION_PLOTS)} or "
                                                  f"{', '.join(CLASSIFICATION_PLOTS)})"))
            elif kind == "weights" and self.model.kind not in LINEAR_MODELS:
                problems.append(("plots.include", f"'weights' plots w and b, so it needs a linear model, "
                                                  f"got model.kind '{self.model.kind}'"))
            elif kind in REGRESSION_PLOTS + CLASSIFICATION_PLOTS and (not table or data.test_split == 0):
                problems.append(("plots.include", f"'{kind}' shows the test split: it needs a table with "
                                                  f"data.test_split > 0"))
        prune = self.sweep.prune if self.sweep else None
        if prune is not None and prune.min_epochs >= self.training.epochs:
            problems.append(("sweep.prune.min_epochs", f"the first rung must stop before training.epochs "
                                                       f"({self.training.epochs}), got {prune.min_epochs}"))
        problems += metric_problems(self, task=None)
        if problems:
            raise CrossFieldError(problems)
        return self

    def resolved(self) -> dict[str, Any]:
        """The spec with every default filled in, as plain JSON data."""
        return self.model_dump(mode="json")

    def spec_hash(self) -> str:
        return canonical_hash(self.resolved())


def metric_names(spec: "Spec", task: Optional[str]) -> list[str]:
    """The per-epoch history metrics a spec produces: loss (and w, b for a linear model on one input) or a
    table task's metrics, each with its val_ twin when there is a validation split. `task` None with
    `data.task: auto` answers for either task."""
    if has_task(spec.data):
        task = task or (None if spec.data.task == "auto" else spec.data.task)
        tasks = [task] if task else list(TASK_METRICS)
        plain = list(dict.fromkeys(m for t in tasks for m in TASK_METRICS[t]))
    else:
        plain = ["loss"]
    names = plain + ([f"val_{m}" for m in plain] if spec.data.validation_split > 0 else [])
    return names + (["w", "b"] if not has_task(spec.data) and spec.model.kind in LINEAR_MODELS else [])


def metric_problems(spec: "Spec", task: Optional[str]) -> list[tuple[str, str]]:
    """Metric names the spec chooses (early stopping's monitor, the gate's and the sweep's metric) that its runs
    do not produce, as (path, message); `task` None answers for `data.task: auto` before the data is read."""
    run = f"a {task} run" if task else "this spec"
    problems = []
    chosen = [("training.early_stopping.monitor", getattr(spec.training.early_stopping, "monitor", None),
               metric_names(spec, task), f"{run}'s history has"),
              ("promote.metric", getattr(spec.promote, "metric", None), published_metrics(spec, task),
               f"{run} publishes"),
              ("sweep.metric", getattr(spec.sweep, "metric", None), published_metrics(spec, task),
               f"{run}'s trials have")]
    for path, name, known, subject in chosen:
        if name is not None and name not in known:
            problems.append((path, f"{subject} no metric '{name}'{did_you_mean(name, known)}; there are: "
                                   f"{', '.join(known)}"))
    return problems


def published_metrics(spec: "Spec", task: Optional[str]) -> list[str]:
    """The metrics a version of this spec records in metrics.json that a gate may compare: the final values of
    the history's metrics, their test_ twins for a table with a test split, and the best epoch's losses."""
    history = metric_names(spec, task)
    test = [f"test_{m}" for m in history if not m.startswith("val_") and m not in ("w", "b")] \
        if has_task(spec.data) and spec.data.test_split > 0 else []
    best = ["best_loss"] + (["best_val_loss"] if spec.data.validation_split > 0 else [])
    return history + test + best


def _kinded(model: type[BaseModel], path: tuple = ()) -> set[tuple]:
    """Paths of the sections whose `kind` picks one of several schemas (a discriminated union), in `model`."""
    found = set()
    for name, field in model.model_fields.items():
        members = models_in(field.annotation)
        if len(members) > 1 and all("kind" in m.model_fields for m in members):
            found.add(path + (name,))
        for member in members:
            found |= _kinded(member, path + (name,))
    return found


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's annotation can hold (through Optional, Union, Annotated, list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in models_in(arg)]


#: Sections a new `kind` replaces instead of merging into, under `extends` and `--set` (`flows.spec.document`).
KINDED_SECTIONS = frozenset(_kinded(Spec) | _kinded(ScoringSpec))


def json_schema(kind: str = "experiment") -> dict[str, Any]:
    """The JSON Schema editors use for completion; `specs/spec.schema.json` (experiments) and
    `specs/scoring.schema.json` (scoring jobs) are these, committed."""
    if kind == "scoring":
        schema = ScoringSpec.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        return schema
    from tasks.model.catalog import json_schema as layer_schema

    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    defs = schema["$defs"]
    defs["KerasLayer"] = layer_schema()  # model.layers' items: every Keras layer and its arguments
    defs["KerasModel"]["properties"]["layers"]["items"] = {"$ref": "#/$defs/KerasLayer"}
    schema["properties"]["extends"] = {
        "type": "string",
        "description": "Another spec file (relative path) this one deep-merges onto.",
    }
    return schema
