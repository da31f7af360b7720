"""The spec's orchestration sections: what happens around an experiment rather than inside it: schedules,
sweeps, the promotion gate and scoring jobs. The sections a task reads live beside their tasks (`tasks/*/spec.py`)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_validator

from tasks.common.sections import CrossFieldError, Section
from tasks.lifecycle.aliases import ALIAS_PATTERN, REF_PATTERN


class ScheduleSpec(Section):
    """When a served or deployed spec runs by itself: exactly one of cron, interval or rrule."""

    cron: Optional[str] = Field(None, description="Cron expression, e.g. '0 6 * * *' (06:00 every day).")
    interval: Optional[float] = Field(None, gt=0, description="Run every this many seconds.")
    rrule: Optional[str] = Field(None, description="An RFC 5545 recurrence rule, e.g. 'FREQ=WEEKLY;BYDAY=MO'.")
    timezone: str = Field("UTC", description="IANA time zone the schedule is read in, e.g. 'Europe/Berlin'.")
    active: bool = Field(True, description="False keeps the schedule registered but paused.")
    overrides: list[str] = Field(
        [], description="`dotted.path=value` overrides applied to the spec for runs from this schedule only."
    )

    @model_validator(mode="after")
    def _one_rule_that_parses(self) -> "ScheduleSpec":
        given = [name for name in ("cron", "interval", "rrule") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of cron, interval or rrule, got {given or 'none'}")
        problems = []
        try:
            import zoneinfo

            zoneinfo.ZoneInfo(self.timezone)
        except (ValueError, KeyError, zoneinfo.ZoneInfoNotFoundError):
            problems.append(("timezone", f"unknown time zone {self.timezone!r} (expected an IANA name like 'Europe/Berlin')"))
        if self.cron is not None:
            from datetime import datetime

            from cronsim import CronSim, CronSimError

            try:
                CronSim(self.cron, datetime(2000, 1, 1))
            except CronSimError as exc:
                problems.append(("cron", f"invalid cron expression {self.cron!r}: {exc}"))
        if self.rrule is not None:
            from dateutil import rrule

            try:
                rrule.rrulestr(self.rrule)
            except (ValueError, TypeError) as exc:
                problems.append(("rrule", f"invalid rrule {self.rrule!r}: {exc}"))
        for item in self.overrides:
            if "=" not in item:
                problems.append(("overrides", f"{item!r} is not dotted.path=value"))
        if problems:
            raise CrossFieldError(problems, relative=True)
        return self


Scalar = Union[bool, int, float, str]
#: Spec paths a sweep may not vary: they name the experiment or configure the sweep itself.
UNSWEEPABLE = ("name", "description", "sweep", "schedule")


class RandomParam(Section):
    """How a random search draws one spec path."""

    kind: Literal["uniform", "loguniform", "int", "choice"] = Field(
        description="uniform/loguniform: a float in [low, high]; int: an integer in [low, high]; choice: one of values."
    )
    low: Optional[float] = Field(None, description="Lower bound (uniform, loguniform, int).")
    high: Optional[float] = Field(None, description="Upper bound (uniform, loguniform, int).")
    values: Optional[list[Union[Scalar, list[Scalar]]]] = Field(None, min_length=1,
                                                              description="The candidates of a 'choice'.")

    @model_validator(mode="after")
    def _bounds(self) -> "RandomParam":
        if self.kind == "choice":
            if not self.values:
                raise ValueError("a 'choice' needs values")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"'{self.kind}' needs low < high, got low={self.low}, high={self.high}")
        elif self.kind == "loguniform" and self.low <= 0:
            raise ValueError(f"'loguniform' needs low > 0, got {self.low}")
        return self


class RandomSearch(Section):
    trials: int = Field(ge=1, le=1000, description="How many points to draw.")
    seed: int = Field(0, ge=0, description="Seed of the draws: the same seed draws the same trials.")
    params: dict[str, RandomParam] = Field(min_length=1, description="Dotted spec path → distribution.")


class SweepRunner(Section):
    kind: Literal["thread", "dask"] = Field(
        "thread", description="Where separate trials run: 'thread' runs trial subflows on a thread pool in this "
        "process; 'dask' submits them as tasks to prefect-dask's DaskTaskRunner (a cluster's worker processes).",
    )
    address: Optional[str] = Field(
        None, description="dask only: scheduler address of an existing cluster (e.g. tcp://10.0.0.5:8786); "
        "without it a LocalCluster of process workers is started.",
    )
    workers: int = Field(2, ge=1, le=256, description="dask only: process workers of the LocalCluster.")


class PruneSpec(Section):
    """Successive halving: every trial trains to `min_epochs`, the best 1/factor by `sweep.metric` go on to
    `factor` times as many epochs, and so on up to `training.epochs`; the rest are pruned where they stand."""

    kind: Literal["halving"] = Field(description="Successive halving (the rungs of Hyperband / ASHA, one bracket).")
    min_epochs: int = Field(ge=1, le=10_000_000, description="Epochs of the first rung: every trial trains this far.")
    factor: int = Field(3, ge=2, le=100, description="Each rung keeps the best 1/factor of its trials (rounded up) "
                        "and trains them factor times as far.")


class SweepSpec(Section):
    """Many trials of one spec, each a full experiment with its own cache keys."""

    grid: dict[str, Annotated[list[Union[Scalar, list[Scalar]]], Field(min_length=1)]] = Field(
        {}, description="Dotted spec path → values; every combination is a trial. Values may be lists, for "
        "list-valued fields such as model.hidden: [[8], [16, 16]].",
    )
    random: Optional[RandomSearch] = Field(None, description="Random search, combined with the grid if both are given.")
    metric: str = Field("loss", description="Metric the best trial is chosen by, e.g. loss or val_loss.")
    mode: Literal["min", "max"] = Field("min", description="Whether the best trial has the smallest or largest metric.")
    concurrency: int = Field(2, ge=1, le=64, description="Separate trials running at once.")
    fuse: bool = Field(
        True, description="Train trials that share a model's shape and differ only in numbers (a linear model's "
        "SGD settings; a table network's learning rate, weight decay, betas, dropout, init seed, schedule, "
        "patience, epochs) as one compiled program with a trial axis.",
    )
    prune: Optional[PruneSpec] = Field(
        None, description="Stop most trials early: successive halving on sweep.metric, which must then be a "
        "validation metric (val_...).",
    )
    runner: SweepRunner = Field(default_factory=SweepRunner, description="Task runner for separate trials.")
    publish_trials: Literal["best", "all", "none"] = Field(
        "best", description="Which trials get their own files (plots, checkpoint, history) inside the sweep's "
        "version, whether they were fused or trained separately.",
    )

    @model_validator(mode="after")
    def _has_trials(self) -> "SweepSpec":
        if not self.grid and self.random is None:
            raise ValueError("a sweep needs a grid, a random search, or both")
        bad = [p for p in [*self.grid, *(self.random.params if self.random else {})] if p.split(".")[0] in UNSWEEPABLE]
        if bad:
            raise ValueError(f"cannot sweep {bad}: {', '.join(UNSWEEPABLE)} are not experiment settings")
        if self.prune is not None:
            problems = []
            if not self.metric.startswith("val_"):
                problems.append(("metric", f"halving ranks trials on held-out rows: give a validation metric "
                                           f"(val_loss, val_accuracy, …), got '{self.metric}'"))
            swept = [*self.grid, *(self.random.params if self.random else {})]
            if "training.epochs" in swept:
                problems.append(("prune", "halving decides how far each trial trains: do not sweep training.epochs"))
            if problems:
                raise CrossFieldError(problems, relative=True)
        return self


class PromoteSpec(Section):
    """After each successful publish, move an alias to the new version only if it is better."""

    alias: str = Field(pattern=ALIAS_PATTERN, description="The alias to move, e.g. production (a slug, not 'latest').")
    metric: str = Field(description="The metric compared, e.g. test_accuracy, val_loss, test_rmse.")
    mode: Literal["min", "max"] = Field("min", description="Whether a smaller or a larger metric is better.")
    min_delta: float = Field(
        0.0, ge=0.0, description="How much better the new version must be to take the alias; a tie never moves it.",
    )

    @model_validator(mode="after")
    def _not_reserved(self) -> "PromoteSpec":
        import re

        if self.alias == "latest" or re.fullmatch(r"v\d+", self.alias):
            raise ValueError(f"'{self.alias}' cannot be an alias: it reads as a version label")
        return self


class PredictSpec(Section):
    model: str = Field(
        pattern=REF_PATTERN,
        description="The version to score with: NAME (its latest), NAME@vN or NAME@ALIAS (e.g. churn@production).",
    )
    input: str = Field(min_length=1, description="A CSV or Parquet file to score, relative to this spec's folder.")
    output: str = Field(min_length=1, description="Where to write the scored rows (.csv or .parquet), relative to "
                        "this spec's folder.")
