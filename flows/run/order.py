"""The order a set of specs runs in (`trainflow run specs/`): each after the specs it needs, whatever the names.

A scoring spec needs the version its `predict.model` names, so it runs after the training spec of that name
(which may move the alias it scores with); a spec whose input file (`predict.input`, `data.path`) another
scoring spec writes runs after that one. Among specs that need nothing from each other the order is the
given one (files sorted by name). A cycle, or a reference that neither a spec of the set nor the artifact
root can satisfy, is a spec error (exit 2) before anything runs. Light: no TensorFlow, no Prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from flows.spec import ScoringSpec, Spec
from flows.spec.document import Position, Problem, SpecError
from tasks.data.spec import FileData
from tasks.lifecycle.aliases import RefError, resolve

Loaded = tuple[Union[Spec, ScoringSpec], Path]  # a spec and its file


def _inputs(spec: Union[Spec, ScoringSpec]) -> list[str]:
    if isinstance(spec, ScoringSpec):
        return [str(Path(spec.predict.input).resolve())]
    return [str(Path(spec.data.path).resolve())] if isinstance(spec.data, FileData) else []


def _makes(producer: Spec, label: Optional[str]) -> bool:
    """Whether a run of `producer` is sure to leave `label` (None or latest: any version; an alias: its gate's,
    which moves when nobody holds it) naming a version; a version number it cannot promise."""
    if label in (None, "latest"):
        return True
    return producer.promote is not None and producer.promote.alias == label


def run_order(loaded: list[Loaded], root: Path) -> list[Loaded]:
    """`loaded` reordered so each spec follows what it needs; SpecError for a cycle or a missing producer."""
    trainers = {}
    writers = {}
    for i, (spec, _) in enumerate(loaded):
        if isinstance(spec, ScoringSpec):
            writers.setdefault(str(Path(spec.predict.output).resolve()), []).append(i)
        else:
            trainers.setdefault(spec.name, []).append(i)
    needs: dict[int, dict[int, str]] = {i: {} for i in range(len(loaded))}
    problems = []
    for i, (spec, path) in enumerate(loaded):
        for file in _inputs(spec):
            for j in writers.get(file, []):
                if j != i:
                    needs[i][j] = f"it writes {Path(file).name}"
        if not isinstance(spec, ScoringSpec):
            continue
        ref = spec.predict.model
        name, _, label = ref.partition("@")
        producers = [j for j in trainers.get(name, []) if j != i]
        for j in producers:
            needs[i][j] = f"it makes {name}"
        if not any(_makes(loaded[j][0], label or None) for j in producers) and not _exists(ref, root):
            made = (f"no spec here promotes {name} to '{label}'" if producers and label else
                    f"no spec here makes version {label} of {name}" if producers else f"no spec here is named {name}")
            problems.append(Problem(Position(str(path), 0, 0), "predict.model",
                                    f"{ref}: {made}, and {root} holds no such version"))
    if problems:
        raise SpecError(problems)
    return [loaded[i] for i in _sorted(needs, loaded)]


def _exists(ref: str, root: Path) -> bool:
    try:
        resolve(ref, root)
        return True
    except RefError:
        return False


def _sorted(needs: dict[int, dict[int, str]], loaded: list[Loaded]) -> list[int]:
    """Kahn's algorithm, always taking the first ready spec in the given order; a cycle is a SpecError."""
    done: list[int] = []
    waiting = sorted(needs)
    while waiting:
        ready = next((i for i in waiting if all(j in done for j in needs[i])), None)
        if ready is None:
            raise SpecError([Problem(None, "", "these specs need each other, so none can run first: "
                                     + _cycle(needs, waiting, loaded))])
        done.append(ready)
        waiting.remove(ready)
    return done


def _cycle(needs: dict[int, dict[int, str]], waiting: list[int], loaded: list[Loaded]) -> str:
    """One cycle among the waiting specs: "a.yaml needs b.yaml (it writes x.csv); b.yaml needs a.yaml (it makes m)"."""
    path, here = [], waiting[0]
    while here not in path:
        path.append(here)
        here = next(j for j in needs[here] if j in waiting)
    cycle = path[path.index(here):] + [here]
    name = lambda i: Path(loaded[i][1]).name  # noqa: E731
    return "; ".join(f"{name(a)} needs {name(b)} ({needs[a][b]})" for a, b in zip(cycle, cycle[1:]))
