"""Checks of a spec that need its data and several of its sections: the loss, the monitored metrics and the
plots against the target's task, and whether every class can be split. Run when a spec is loaded
(`validate`, before `run`), so a misspelled column or a class too small to stratify is an exit-2 spec error
with its position, not a failed run after the server started. What the data holds is read by
`tasks.data.profile`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from flows.spec import Spec, metric_problems
from tasks.data.profile import SCAN_BYTES, DataProblem, column_problems, needed_per_class, resolved_task, scanned, target_profile
from tasks.data.spec import ArraysData, FileData, ImagesData, is_table
from tasks.plots.spec import CLASSIFICATION_PLOTS, REGRESSION_PLOTS
from tasks.train.spec import REGRESSION_LOSSES


def task_problems(spec: Spec, task: str, target_kind: str, counts: Counter) -> list[DataProblem]:
    """What does not fit the target's task: the loss, the classes' sizes, the monitored metric, the plots."""
    data, problems = spec.data, []
    name = getattr(data, "target", None) or "label"
    if task == "regression" and target_kind != "number":
        problems.append(DataProblem("data.task", f"regression needs a numeric target; '{name}' holds text"))
    loss = spec.training.loss.kind
    if task == "classification" and loss in REGRESSION_LOSSES:
        problems.append(DataProblem("training.loss.kind", f"'{loss}' is a regression loss and the task is "
                                                          f"classification; use auto or cross_entropy"))
    if task == "regression" and loss == "cross_entropy":
        problems.append(DataProblem("training.loss.kind", "'cross_entropy' needs a classification task; the "
                                                          "target is numeric (set data.task: classification?)"))
    if task == "classification":
        if len(counts) < 2:
            problems.append(DataProblem("data.target", f"'{name}' has {len(counts)} class(es); classification "
                                                       "needs at least 2"))
        for label, count in sorted(counts.items(), key=lambda item: (item[1], str(item[0]))):
            needed = needed_per_class(data.validation_split, data.test_split, count)
            if count < needed:
                from tasks.data.tables import excerpt  # a label is a value from the file: quoted short and escaped

                problems.append(DataProblem("data.target", f"class {excerpt(label)} has {count} example(s); the stratified "
                                            f"validation ({data.validation_split}) and test ({data.test_split}) "
                                            f"splits need at least {needed}"))
                break
    problems += [DataProblem(path, message) for path, message in metric_problems(spec, task)]
    wrong = CLASSIFICATION_PLOTS if task == "regression" else REGRESSION_PLOTS
    for kind in spec.plots.include or ():
        if kind in wrong:
            problems.append(DataProblem("plots.include", f"'{kind}' does not apply to a {task} task"))
        elif kind == "roc" and task == "classification" and len(counts) != 2:
            problems.append(DataProblem("plots.include", f"'roc' needs two classes, '{name}' has {len(counts)}"))
    return problems


def check_data(spec: Spec, list_header: bool = True) -> Findings:
    """Every problem of the spec against its data (none when it fits), and what `validate` warns about."""
    if isinstance(spec.data, ArraysData):
        return check_arrays(spec)
    if isinstance(spec.data, ImagesData):
        return check_images(spec)
    if isinstance(spec.data, FileData):
        problems = column_problems(spec.data, list_header)  # first: a misspelt target is not a column, whatever else
        if problems:
            return Findings(problems)
        if isinstance(getattr(spec.data, "features", None), list) and spec.data.target in spec.data.features:
            return Findings([DataProblem("data.features", f"the target '{spec.data.target}' cannot also be a feature")])
    if not is_table(spec.data):
        if isinstance(spec.data, FileData):  # the 1-D shorthand: what its read would refuse, refused now
            from tasks.data.load import shorthand_problems

            return Findings([DataProblem(at, message) for at, message in shorthand_problems(spec.data, SCAN_BYTES)])
        return Findings()
    found = scanned(spec.data) if isinstance(spec.data, FileData) else None
    if found is not None and (found.problems or found.target is None):
        return Findings(found.problems, found.warnings, found.summary)
    target_kind, counts = found.target if found else target_profile(spec.data)
    problems = task_problems(spec, resolved_task(spec.data, target_kind), target_kind, counts)
    return Findings(problems, found.warnings if found else [], found.summary if found else "",
                    found.dates if found else {})


def check_arrays(spec: Spec) -> "Findings":
    """Arrays: what `tasks.data.arrays` finds in their headers (keys, lengths, dtypes, ranks), then the target's
    task against the spec, with the class counts the stratified splits need."""
    from tasks.data import arrays

    data = spec.data
    try:
        found = arrays.headers(Path(data.path))
    except Exception as exc:  # noqa: BLE001  (DataError and the transient kinds: the message names the file)
        return Findings([DataProblem("data.path", str(exc))])
    problems = [DataProblem(path, message) for path, message in arrays.problems(data, found)]
    if problems:
        return Findings(problems)
    target_kind = arrays.target_kind(data, found)
    task = resolved_task(data, target_kind)
    counts = Counter(arrays.class_counts(data)) if task == "classification" else Counter()
    shapes = ", ".join(f"{key} {list(found[key].shape)} {found[key].dtype}" for key in arrays.input_keys(data))
    target = found[data.y]
    summary = (f"{target.shape[0]:,} examples; inputs {shapes}; target {data.y} {list(target.shape)} {target.dtype} "
               f"({task}" + (f", {len(counts)} classes)" if counts else ")"))
    return Findings(task_problems(spec, task, target_kind, counts), [], summary)


def check_images(spec: Spec) -> "Findings":
    """Images: the content index (every new file hashed and decoded once, `tasks.data.images`), then what a run
    could not use (an empty folder, an undecodable file, mixed sizes, a class too small for the splits) and the
    target's task against the spec; the summary counts the images per class."""
    from tasks.data import images

    data = spec.data
    try:
        indexed = images.index(data, spec._images_check)
    except Exception as exc:  # noqa: BLE001  (a lane refusal, an unreadable index: the message names the file)
        return Findings([DataProblem("data.index" if data.index else "data.path", str(exc))])
    problems = [DataProblem(path, message) for path, message in
                images.problems(data, indexed, data.validation_split, data.test_split)]
    if problems:
        return Findings(problems)
    target_kind = images.target_kind(data, indexed)
    task = resolved_task(data, target_kind)
    counts = Counter(images.class_counts(indexed)) if task == "classification" else Counter()
    return Findings(task_problems(spec, task, target_kind, counts), [], images.summary(data, indexed, task))


@dataclass
class Findings:
    problems: list[DataProblem] = field(default_factory=list)  # errors: the spec cannot run on this data
    warnings: list[str] = field(default_factory=list)  # what a practitioner would question; the run goes ahead
    summary: str = ""  # rows, text columns' distinct values, date columns' parts, whether only a sample was read
    dates: dict = field(default_factory=dict)  # the features read as dates ("date" or "datetime"), for the resolved spec
