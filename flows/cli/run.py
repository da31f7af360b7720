"""`trainflow run`, `validate`, `schema` and `plan`: from spec files to runs, checks and explanations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from flows.cli.app import (
    ArtifactsOption,
    DebugOption,
    JsonOption,
    NoServerOption,
    SetOption,
    app,
    check_server_settings,
    errors,
    fail,
    load_all,
    load_one,
    print_ui,
    stdout_to_stderr,
)
from flows.cli.lifecycle import predict_file


@app.command()
def run(paths: List[Path] = typer.Argument(..., help="Spec files or folders of them. Several run one after another "
                                                     "in one process, so the TensorFlow and Prefect imports are paid once."),
        overrides: Optional[List[str]] = SetOption, artifacts: Optional[Path] = ArtifactsOption,
        as_json: bool = JsonOption,
        refresh: bool = typer.Option(False, "--refresh", help="Recompute every task and overwrite its cache entry."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the task cache."),
        no_server: bool = NoServerOption, debug: bool = DebugOption) -> None:
    """Run specs as Prefect flows and publish artifacts/<name>/vNNNN/ for each.

    Every spec is validated before any runs, and each runs after the specs it needs (a scoring spec after the
    training spec of its model); a failed run stops the ones after it (those before it stay published).

    With no Prefect server running, the first run starts one in the background and says so (see --no-server)."""
    check_server_settings()
    with errors(debug):
        from flows.run.order import run_order
        from flows.run.plan import artifact_root, export_root

        export_root(artifacts)  # the whole command's root, from validation on (an images spec's content index)
        specs = [spec for spec, _ in run_order(load_all(paths, overrides, with_paths=True), artifact_root(artifacts))]
        check_builds(specs, debug)
    from flows.api import run_spec
    from flows.spec import ScoringSpec

    for spec in specs:
        label = f"{spec.name}: " if len(specs) > 1 else ""
        if isinstance(spec, ScoringSpec):
            predict_file(spec.predict.model, spec.predict.input, spec.predict.output, artifacts, as_json, debug, label,
                         no_server)
            continue
        with errors(debug, label, failure="run failed"):
            if as_json:
                with stdout_to_stderr() as real_stdout:
                    result = run_spec(spec, artifacts=artifacts, refresh=refresh, use_cache=not no_cache,
                                      tracebacks=debug, no_server=no_server)
                real_stdout.write(json.dumps(result, default=_json_default) + "\n")
                real_stdout.flush()
                continue
            result = run_spec(spec, artifacts=artifacts, refresh=refresh, use_cache=not no_cache, tracebacks=debug,
                              no_server=no_server)
        if label:
            typer.echo(f"== {spec.name}")
        _print_report(result, spec.training.progress_lines)


def check_builds(specs: list, debug: bool = False) -> None:
    """Every experiment's model built on its data's shapes (`flows.spec.build`) before any spec runs: all
    problems at once, exit 2."""
    from flows.process.startup import before_tensorflow
    from flows.spec import Spec
    from flows.spec.build import check_build
    from flows.spec.document import SpecError

    before_tensorflow(debug)
    problems = []
    for spec in specs:
        if isinstance(spec, Spec):
            try:
                check_build(spec)
            except SpecError as exc:
                problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)


def _json_default(value):
    """`run_spec`'s history (a `tasks.results.RowView`) as the list of rows the JSON contract has."""
    from collections.abc import Sequence

    if isinstance(value, Sequence):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _print_report(result: dict, lines: int) -> None:
    """The guide's report, one line per shown epoch (about `lines` of them, evenly spaced), then the outcome."""
    if result.get("kind") == "sweep":
        _print_sweep(result)
        return
    from tasks.publish.report import logged_epochs, report_line, test_lines

    history = result["history"]
    trained_here = any(t["name"] == "train" and t["state"] == "Completed" for t in result["tasks"])
    if trained_here and not result.get("resumed_from") and history and _log_shares_stdout():
        # the run log, on the same screen or file, showed each epoch as it trained: said once, not twice
        typer.echo(f"Epoch {0:2d}: {report_line(result['initial'])}  (initial state; epochs 1-{len(history)} "
                   "are in the run log above)")
    else:
        typer.echo(f"Epoch {0:2d}: {report_line(result['initial'])}  (initial state)")
        for epoch in sorted(logged_epochs(len(history), lines)):  # row i is the state after epoch i + 1
            if 1 <= epoch <= len(history):
                typer.echo(f"Epoch {epoch:2d}: {report_line(history[epoch - 1])}")
    metrics = result["metrics"]
    tested = test_lines(metrics)
    if tested:
        typer.echo("Test: " + "; ".join(tested))
    if "stopped_epoch" in metrics:
        typer.echo(f"Early stopping: stopped at epoch {metrics['stopped_epoch']}, best epoch {metrics['best_epoch']}")
    for warning in result.get("warnings") or ():
        typer.echo(f"warning: {warning}", err=True)
    states = ", ".join(f"{t['name']}={t['state']}" for t in result["tasks"])
    typer.echo(f"Tasks: {states}")
    verb = "Reused identical" if result["reused"] else "Published"
    typer.echo(f"{verb} {result['name']} {result['version']}: {result['path']}")
    print_ui(result)


def _log_shares_stdout() -> bool:
    """Whether stdout and stderr, where Prefect's run log goes, are one destination (a terminal, or `2>&1`
    into one file or pipe): then the log already showed the epoch lines there. False when either is not a
    file descriptor (the command runs inside a program that captures its output)."""
    import os
    import sys

    try:
        out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (out.st_dev, out.st_ino, out.st_rdev) == (err.st_dev, err.st_ino, err.st_rdev)


def _print_sweep(result: dict) -> None:
    metric = result["metric"]
    typer.echo(f"Sweep {result['name']}: {len(result['trials'])} trials, {result['path_used']} path ({result['why']})")
    for trial in result["trials"]:
        values = ", ".join(f"{k}={v}" for k, v in trial["values"].items())
        score = trial["metrics"].get(metric)
        state = f"Pruned@{trial['pruned_at']}" if trial.get("pruned_at") else trial["state"]
        typer.echo(f"  {trial['id']}  {values:<50} {state:<9} {metric}={score if score is None else f'{score:.6g}'}")
    best = result["best"]
    if best:
        typer.echo(f"Best: {best['id']} ({', '.join(f'{k}={v}' for k, v in best['values'].items())}) "
                   f"{metric}={best['metrics'][metric]:.6g}" + (f"  {best['path']}" if best.get("path") else ""))
    verb = "Reused identical" if result["reused"] else "Published"
    typer.echo(f"{verb} {result['name']} {result['version']}: {result['path']}")
    print_ui(result)


@app.command()
def validate(paths: List[Path] = typer.Argument(..., help="Spec files or folders of them."),
             overrides: Optional[List[str]] = SetOption,
             resolved: bool = typer.Option(False, "--resolved", help="Also print each spec as it will run: every "
                                                                     "default filled in (what spec.yaml records)."),
             build: bool = typer.Option(False, "--build", help="Also build each layer stack or builder on the "
                                                               "data's shapes, as a run does first (imports "
                                                               "TensorFlow; runs a python model's builder)."),
             debug: bool = DebugOption) -> None:
    """Check specs and their data (columns, every cell of a table, classes); print every problem as
    file:line:col: path: message, and warnings about the data (ID-like or constant columns, …). With --build,
    also whether each model's layers fit the data's shapes."""
    with errors(debug):
        from flows.spec import ScoringSpec
        from flows.spec.document import SpecError
        from flows.spec.load import collect, load_any

        files = collect(paths)
        if not files:
            fail(f"no spec files in {', '.join(map(str, paths))}", 2)
        failed = False
        for path in files:
            try:
                spec = load_any(path, overrides or [])
                if build and not isinstance(spec, ScoringSpec):
                    from flows.process.startup import before_tensorflow
                    from flows.spec.build import check_build

                    before_tensorflow(debug)
                    check_build(spec)
                findings = getattr(spec, "data_findings", None)
                summary = f"; {findings.summary}" if findings and findings.summary else ""
                typer.echo(f"{path}: ok ({spec.name}, spec hash {spec.spec_hash()[:8]}{summary})")
                for warning in findings.warnings if findings else ():
                    typer.echo(f"{path}: warning: {warning}", err=True)
                if resolved:
                    from tasks.publish.report import spec_yaml

                    typer.echo(spec_yaml(spec.resolved()).decode(), nl=False)
            except SpecError as exc:
                if debug:
                    raise
                failed = True
                typer.echo(str(exc), err=True)
        if failed:
            raise typer.Exit(2)


@app.command()
def schema(output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to a file instead of stdout."),
           kind: str = typer.Option("experiment", "--kind", help="experiment (specs/spec.schema.json), scoring "
                                                                 "(specs/scoring.schema.json) or layers (the Keras "
                                                                 "layers a stack may name, read from the installed "
                                                                 "Keras: tasks/model/keras_layers.json).")) -> None:
    """Print the JSON Schema editors complete specs from (committed in specs/)."""
    from flows.spec import json_schema

    if kind not in ("experiment", "scoring", "layers"):
        fail(f"--kind: expected experiment, scoring or layers, got {kind!r}", 2)
    if kind == "layers":  # imports Keras: the record validate checks stacks against without it
        from tasks.model import catalog

        text = json.dumps(catalog.generate(), indent=1, sort_keys=True) + "\n"
    else:
        text = json.dumps(json_schema(kind), indent=2) + "\n"
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


@app.command()
def plan(spec: Path = typer.Argument(..., help="The spec file."), overrides: Optional[List[str]] = SetOption,
         artifacts: Optional[Path] = ArtifactsOption, as_json: bool = JsonOption, debug: bool = DebugOption) -> None:
    """Show which tasks will run and which are cached, and why, without running anything."""
    with errors(debug):
        from flows.run.plan import artifact_root, cached_tasks, compile_plan, explain, export_root
        from tasks.publish.store import Store
        from tasks.train.fastpath import choose_step

        export_root(artifacts)  # validation's content index under this root
        resolved = load_one(spec, overrides)
        root = artifact_root(artifacts)
        the_plan = compile_plan(resolved)
        store = Store(root)
        latest = store.latest(resolved.name)
        previous = latest.manifest() if latest else None
        cached = cached_tasks(the_plan, root)
        cached["publish"] = bool(the_plan.fingerprint) and store.reusable(resolved.name, the_plan.fingerprint)[0] is not None
        rows = explain(the_plan, previous, cached)
        from tasks.data.spec import has_task
        from tasks.train.fastpath import step_kind

        step = choose_step(step_kind(resolved.model.kind, has_task(resolved.data)), resolved.training,
                           examples=_examples(resolved))
        path, why, trials, groups = _plan_trials(resolved, root) if resolved.sweep else (None, "", None, None)
        filled = resolved.table_defaults
        if as_json:
            typer.echo(json.dumps({"name": resolved.name, "spec_hash": the_plan.spec_hash,
                                   "compared_with": latest.label if latest else None, "tasks": rows,
                                   "training_step": {"step": step.step, "why": step.why},
                                   "trials": trials, "trials_path": path, "trials_why": why or None,
                                   "trial_groups": groups, "table_defaults": filled}))
            return
        if filled:
            typer.echo("table defaults (what the spec leaves unsaid; `validate --resolved` prints it all): "
                       + ", ".join(f"{field}={value if isinstance(value, str) else json.dumps(value)}"
                                   for field, value in filled.items()))
        if trials is not None:
            typer.echo(f"{resolved.name}: sweep of {len(trials)} trials, {path}:")
            for number, group in enumerate(groups):
                typer.echo(f"  group {number}: {len(group['trials'])} trial(s), {group['why']}")
            for trial in trials:
                values = ", ".join(f"{k}={v}" for k, v in trial["values"].items())
                typer.echo(f"  {trial['id']}  group {trial['group']}  {values:<50} {trial['action']}")
            return
        typer.echo(f"{resolved.name} (spec {the_plan.spec_hash[:8]}), compared with "
                   f"{latest.label if latest else 'no earlier version'}:")
        for row in rows:
            key = row["key"][:12] if row["key"] else "-" * 12
            why = f"  ({'; '.join(row['why'])})" if row["why"] else ""
            typer.echo(f"  {row['name']:<11} {key}  {row['action']}{why}")
        typer.echo(f"training step: {step.step} ({step.why})")


def _examples(spec) -> Optional[int]:
    """Training examples of generated data (a file's count is known only once it is read)."""
    count = getattr(spec.data, "num_examples", None)
    return None if count is None else count - int(count * spec.data.validation_split)


def _plan_trials(spec, root) -> tuple[str, str, list[dict], list[dict]]:
    """How a sweep's trials train (fused, separate or mixed) and why, each trial with its group and whether
    its training would run or is cached (a fused linear group shares one cached result), and the groups."""
    from flows.run.plan import results_dir
    from flows.run.trials import expand, fused_key, path_used, trial_groups

    trials = expand(spec)
    groups = trial_groups(spec, trials)
    cached = lambda key: bool(key) and (results_dir(root) / key).is_file()  # noqa: E731
    rows = []
    for number, group in enumerate(groups):
        shared = group.step == "trials" and cached(fused_key(group.trials))
        rows += [{"id": t.id, "values": t.values, "key": t.key, "group": number,
                  "action": "cached" if (shared if group.step == "trials" else cached(t.plan.key("train"))) else "run"}
                 for t in group.trials]
    order = {t.id: i for i, t in enumerate(trials)}
    rows.sort(key=lambda row: order[row["id"]])
    why = "; ".join(g.why for g in groups)
    return path_used(groups), why, rows, [{"step": g.step, "trials": [t.id for t in g.trials], "why": g.why}
                                          for g in groups]
