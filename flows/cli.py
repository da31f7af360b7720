"""The `trainflow` command line.

Commands that do not train (`--help`, `validate`, `schema`, `plan`, `list`, `show`, `diff`) import
neither TensorFlow nor matplotlib nor Prefect, so they answer at once. Exit codes: 0 success, 1 a run
that failed, 2 an invalid spec or usage (and then nothing is written). Errors are one line per problem,
position first; `--debug` adds the traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Run TensorFlow experiments from YAML specs as cached, versioned Prefect flows.")


def _show_version(value: bool) -> None:
    if value:
        from importlib import metadata

        typer.echo(f"trainflow {metadata.version('trainflow')}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                       help="Print trainflow's version and exit.")) -> None:
    """Run TensorFlow experiments from YAML specs as cached, versioned Prefect flows."""

SetOption = typer.Option(None, "--set", "-s", metavar="PATH=VALUE", help="Override a spec field, e.g. training.epochs=50.")
ArtifactsOption = typer.Option(None, "--artifacts", "-a", envvar="TRAINFLOW_ARTIFACTS",
                               help="Artifact root (default ./artifacts).")
JsonOption = typer.Option(False, "--json", help="Print one JSON object per spec on stdout, a line each; logs go to stderr.")
DebugOption = typer.Option(False, "--debug", help="Show tracebacks.")


def _fail(message: str, code: int) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors(debug: bool, label: str = "", failure: str = "failed") -> Iterator[None]:
    """Every command's error handler: exceptions to exit codes and one-screen messages prefixed with `label`;
    a traceback only with --debug."""
    from flows.loader import SpecError

    try:
        yield
    except SpecError as exc:
        if debug:
            raise
        _fail(label + str(exc), 2)
    except typer.Exit:
        raise
    except BrokenPipeError:  # stdout closed early (e.g. `| head`): not a failure of ours
        os._exit(0)
    except KeyboardInterrupt:
        _fail("interrupted; nothing was published", 130)
    except Exception as exc:  # a failed run (the task's own exception) or an unexpected error
        if debug:
            raise
        if failure == "run failed":
            _fail(f"{label}run failed: {exc}\n(nothing was published for it; --debug shows the traceback)", 1)
        _fail(f"{label}{failure}: {type(exc).__name__}: {exc} (--debug shows the traceback)", 1)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[Any]:
    """Send everything written to fd 1 (Python or C++) to stderr, keeping a handle on the real stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real = os.fdopen(os.dup(saved), "w")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield real
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _load(spec_path: Path, overrides: Optional[List[str]]):
    from flows.loader import load_spec

    return load_spec(spec_path, overrides or [])


@app.command()
def run(paths: List[Path] = typer.Argument(..., help="Spec files or folders of them. Several run one after another "
                                                     "in one process, so the TensorFlow and Prefect imports are paid once."),
        overrides: Optional[List[str]] = SetOption, artifacts: Optional[Path] = ArtifactsOption,
        as_json: bool = JsonOption,
        refresh: bool = typer.Option(False, "--refresh", help="Recompute every task and overwrite its cache entry."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the task cache."),
        debug: bool = DebugOption) -> None:
    """Run specs as Prefect flows and publish artifacts/<name>/vNNNN/ for each.

    Every spec is validated before any runs; a failed run stops the ones after it (those before it stay
    published)."""
    with _errors(debug):
        specs = _load_all(paths, overrides)
    from flows.api import run_spec
    from flows.spec import ScoringSpec

    for spec in specs:
        label = f"{spec.name}: " if len(specs) > 1 else ""
        if isinstance(spec, ScoringSpec):
            _predict(spec.predict.model, spec.predict.input, spec.predict.output, artifacts, as_json, debug, label)
            continue
        with _errors(debug, label, failure="run failed"):
            if as_json:
                with _stdout_to_stderr() as real_stdout:
                    result = run_spec(spec, artifacts=artifacts, refresh=refresh, use_cache=not no_cache,
                                      tracebacks=debug)
                real_stdout.write(json.dumps(result) + "\n")
                real_stdout.flush()
                continue
            result = run_spec(spec, artifacts=artifacts, refresh=refresh, use_cache=not no_cache, tracebacks=debug)
        if label:
            typer.echo(f"== {spec.name}")
        _print_report(result, spec.training.progress_lines)


def _print_report(result: dict, lines: int) -> None:
    """The guide's report, one line per shown epoch (about `lines` of them, evenly spaced), then the outcome."""
    if result.get("kind") == "sweep":
        _print_sweep(result)
        return
    from tasks.report import logged_epochs, report_line

    history = result["history"]
    shown = logged_epochs(len(history), lines)
    typer.echo(f"Epoch {0:2d}: {report_line(result['initial'])}  (initial state)")
    for row in history:
        if row["epoch"] in shown:
            typer.echo(f"Epoch {row['epoch']:2d}: {report_line(row)}")
    metrics = result["metrics"]
    if any(name.startswith("test_") for name in metrics):
        typer.echo("Test: " + ", ".join(f"{name.removeprefix('test_')}={value:.5g}" for name, value in metrics.items()
                                        if name.startswith("test_")))
    if "stopped_epoch" in metrics:
        typer.echo(f"Early stopping: stopped at epoch {metrics['stopped_epoch']}, best epoch {metrics['best_epoch']}")
    states = ", ".join(f"{t['name']}={t['state']}" for t in result["tasks"])
    typer.echo(f"Tasks: {states}")
    verb = "Reused identical" if result["reused"] else "Published"
    typer.echo(f"{verb} {result['name']} {result['version']}: {result['path']}")
    _print_ui(result)


def _print_ui(result: dict) -> None:
    """Where this run is in the Prefect UI, or how to get there after a temporary server."""
    if result.get("ui_url"):
        typer.echo(f"Prefect UI: {result['ui_url']}")
    else:
        typer.echo("Prefect UI: `trainflow server start` (or `make ui`) serves every run so far, this one included")


def _print_sweep(result: dict) -> None:
    metric = result["metric"]
    typer.echo(f"Sweep {result['name']}: {len(result['trials'])} trials, {result['path_used']} path ({result['why']})")
    for trial in result["trials"]:
        values = ", ".join(f"{k}={v}" for k, v in trial["values"].items())
        score = trial["metrics"].get(metric)
        typer.echo(f"  {trial['id']}  {values:<50} {trial['state']:<9} {metric}={score if score is None else f'{score:.6g}'}")
    best = result["best"]
    if best:
        typer.echo(f"Best: {best['id']} ({', '.join(f'{k}={v}' for k, v in best['values'].items())}) "
                   f"{metric}={best['metrics'][metric]:.6g}" + (f"  {best['path']}" if best.get("path") else ""))
    verb = "Reused identical" if result["reused"] else "Published"
    typer.echo(f"{verb} {result['name']} {result['version']}: {result['path']}")
    _print_ui(result)


@app.command()
def validate(paths: List[Path] = typer.Argument(..., help="Spec files or folders of them."),
             overrides: Optional[List[str]] = SetOption, debug: bool = DebugOption) -> None:
    """Check specs, data files' columns included; print every problem as file:line:col: path: message."""
    with _errors(debug):
        from flows.loader import SpecError, collect, load_any

        files = collect(paths)
        if not files:
            _fail(f"no spec files in {', '.join(map(str, paths))}", 2)
        failed = False
        for path in files:
            try:
                spec = load_any(path, overrides or [])
                typer.echo(f"{path}: ok ({spec.name}, spec hash {spec.spec_hash()[:8]})")
            except SpecError as exc:
                if debug:
                    raise
                failed = True
                typer.echo(str(exc), err=True)
        if failed:
            raise typer.Exit(2)


@app.command()
def schema(output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to a file instead of stdout."),
           kind: str = typer.Option("experiment", "--kind", help="experiment (specs/spec.schema.json) or scoring "
                                                                 "(specs/scoring.schema.json).")) -> None:
    """Print the JSON Schema editors complete specs from (committed in specs/)."""
    from flows.spec import json_schema

    if kind not in ("experiment", "scoring"):
        _fail(f"--kind: expected experiment or scoring, got {kind!r}", 2)
    text = json.dumps(json_schema(kind), indent=2) + "\n"
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


@app.command()
def plan(spec: Path = typer.Argument(..., help="The spec file."), overrides: Optional[List[str]] = SetOption,
         artifacts: Optional[Path] = ArtifactsOption, as_json: bool = JsonOption, debug: bool = DebugOption) -> None:
    """Show which tasks will run and which are cached, and why, without running anything."""
    with _errors(debug):
        from flows.plan import artifact_root, cached_tasks, compile_plan, explain
        from tasks.fastpath import choose_step
        from tasks.store import Store

        resolved = _load(spec, overrides)
        root = artifact_root(artifacts)
        the_plan = compile_plan(resolved)
        store = Store(root)
        latest = store.latest(resolved.name)
        previous = latest.manifest() if latest else None
        cached = cached_tasks(the_plan, root)
        cached["publish"] = bool(the_plan.fingerprint) and store.find(resolved.name, the_plan.fingerprint) is not None
        rows = explain(the_plan, previous, cached)
        from flows.spec import is_table

        step = choose_step("table" if is_table(resolved.data) else resolved.model.kind, resolved.training,
                           examples=_examples(resolved))
        fused, why, trials = _plan_trials(resolved, root) if resolved.sweep else (False, "", None)
        if as_json:
            typer.echo(json.dumps({"name": resolved.name, "spec_hash": the_plan.spec_hash,
                                   "compared_with": latest.label if latest else None, "tasks": rows,
                                   "training_step": {"step": step.step, "why": step.why},
                                   "trials": trials, "trials_path": ("fused" if fused else "separate") if trials else None,
                                   "trials_why": why or None}))
            return
        if trials is not None:
            typer.echo(f"{resolved.name}: sweep of {len(trials)} trials, {'fused' if fused else 'separate'} ({why}):")
            for trial in trials:
                values = ", ".join(f"{k}={v}" for k, v in trial["values"].items())
                typer.echo(f"  {trial['id']}  {values:<50} {trial['action']}")
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


def _plan_trials(spec, root) -> tuple[bool, str, list[dict]]:
    """Whether a sweep fuses and why, and each trial with whether its training would run or is cached
    (fused trials share one cached result)."""
    from flows.plan import results_dir
    from flows.trials import expand, fused_key, trial_choice

    trials = expand(spec)
    choice = trial_choice(spec, trials)
    fused = choice.step == "trials"
    cached = lambda key: bool(key) and (results_dir(root) / key).is_file()  # noqa: E731
    shared = fused and cached(fused_key(trials))
    rows = [{"id": t.id, "values": t.values, "key": t.key,
             "action": "cached" if (shared if fused else cached(t.plan.key("train"))) else "run"} for t in trials]
    return fused, choice.why, rows


@app.command("list")
def list_versions(name: Optional[str] = typer.Argument(None, help="A spec name; all names when omitted."),
                  artifacts: Optional[Path] = ArtifactsOption, as_json: bool = JsonOption,
                  debug: bool = DebugOption) -> None:
    """List published versions with date, metrics and spec hash; sweeps are marked, their trials inside them."""
    with _errors(debug):
        from flows.plan import artifact_root
        from tasks.store import Store

        from tasks.aliases import Aliases

        store = Store(artifact_root(artifacts))
        if name and not store.versions(name):
            _unknown_name(store, name)
        rows = []
        for series in [name] if name else store.names():
            aliases = Aliases(store, series)
            for version in store.versions(series):
                manifest = _manifest(version)
                rows.append({"name": series, "version": version.label, "path": str(version.path),
                             "aliases": aliases.of(version.label),
                             "kind": manifest.get("kind", "experiment"), "created": manifest.get("created"),
                             "spec_hash": manifest.get("spec_hash"), "metrics": manifest.get("metrics", {}),
                             "trials": len(manifest.get("trials", [])) or None})
        if as_json:
            typer.echo(json.dumps(rows))
            return
        if not rows:
            typer.echo("no versions" + (f" of {name}" if name else ""))
        for row in rows:
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in row["metrics"].items()
                                if isinstance(v, float) and not k.startswith("best_"))
            kind = f"  sweep of {row['trials']} trials, best:" if row["kind"] == "sweep" else ""
            held = f"  [{', '.join(row['aliases'])}]" if row["aliases"] else ""
            typer.echo(f"{row['name']}@{row['version']}{held}  {row['created']}  spec {str(row['spec_hash'])[:8]}"
                       f"{kind}  {metrics}")


def _manifest(version) -> dict:
    """A version's manifest, or an empty one when it cannot be read (`verify` says why)."""
    try:
        return version.manifest()
    except (OSError, ValueError):
        return {}


def _unknown_name(store, name: str) -> None:
    known = store.names()
    from flows.loader import did_you_mean

    _fail(f"{name}: no versions{did_you_mean(name, known)}; known: {', '.join(known) or 'none'}", 2)


def _version(ref: str, artifacts: Optional[Path]):
    """The version `ref` names (NAME, NAME@vN, NAME@ALIAS); exit 2 listing what exists when it names none."""
    from flows.plan import artifact_root
    from tasks.aliases import RefError, resolve

    try:
        return resolve(ref, artifact_root(artifacts))
    except RefError as exc:
        _fail(str(exc), 2)


def _seconds(value) -> str:
    return f"{value:.3f}s" if isinstance(value, (int, float)) else "-"


@app.command()
def show(ref: str = typer.Argument(..., help="NAME or NAME@vN."), artifacts: Optional[Path] = ArtifactsOption,
         as_json: bool = JsonOption, debug: bool = DebugOption) -> None:
    """Show a version's manifest: metrics, tasks, and a sweep's trials."""
    with _errors(debug):
        manifest = _version(ref, artifacts).manifest()
        if as_json:
            typer.echo(json.dumps(manifest))
            return
        kind = manifest.get("kind", "experiment")
        typer.echo(f"{manifest['name']}@{manifest['version']}  ({kind})  created {manifest.get('created')}  "
                   f"previous {manifest.get('previous') or '-'}  git {manifest.get('git_commit') or '-'}")
        typer.echo(f"spec hash {manifest.get('spec_hash')}")
        for key, value in manifest.get("metrics", {}).items():
            typer.echo(f"  {key:<16} {value:.6g}" if isinstance(value, float) else f"  {key:<16} {value}")
        for task in manifest.get("tasks", []):
            key = str(task.get("key"))[:12] if task.get("key") else "-"
            typer.echo(f"  task {task['name']:<14} {task.get('state', '-'):<10} {_seconds(task.get('seconds')):>9}  {key}")
        if kind == "sweep":
            best = (manifest.get("best") or {}).get("id")
            typer.echo(f"trials ({manifest.get('path_used')} path: {manifest.get('why')}):")
            metric = manifest["spec"]["sweep"]["metric"]
            for trial in manifest.get("trials", []):
                values = ", ".join(f"{k}={v}" for k, v in trial["values"].items())
                score = trial["metrics"].get(metric)
                typer.echo(f"  {'*' if trial['id'] == best else ' '} {trial['id']}  {values}  {trial['state']}  "
                           f"{metric}={score if score is None else f'{score:.6g}'}"
                           + (f"  {trial['path']}" if trial.get("path") else ""))


@app.command()
def diff(a: str = typer.Argument(..., help="NAME@vA (alone: compared with the version before it)"),
         b: Optional[str] = typer.Argument(None, help="NAME@vB"), artifacts: Optional[Path] = ArtifactsOption,
         as_json: bool = JsonOption, debug: bool = DebugOption) -> None:
    """Compare two versions: the spec paths that differ and the metric deltas."""
    with _errors(debug):
        from flows.plan import changed_paths

        newer = _version(b or a, artifacts)
        if b is None:
            previous = newer.manifest().get("previous")
            if previous is None:
                _fail(f"{a}: is the first version of {newer.name}; nothing before it to compare with", 2)
            older = _version(f"{newer.name}@{previous}", artifacts)
        else:
            older = _version(a, artifacts)
        ma, mb = older.manifest(), newer.manifest()
        changes = changed_paths(ma["spec"], mb["spec"])
        metrics = {k: {"a": ma["metrics"].get(k), "b": mb["metrics"].get(k),
                       "delta": (mb["metrics"][k] - ma["metrics"][k]) if isinstance(ma["metrics"].get(k), (int, float))
                       and isinstance(mb["metrics"].get(k), (int, float)) else None}
                   for k in sorted(set(ma["metrics"]) | set(mb["metrics"]))}
        if as_json:
            typer.echo(json.dumps({"a": f"{older.name}@{older.label}", "b": f"{newer.name}@{newer.label}",
                                   "spec": changes, "metrics": metrics}))
            return
        typer.echo(f"{older.name}@{older.label} → {newer.name}@{newer.label}")
        typer.echo("spec:" if changes else "spec: identical")
        for change in changes:
            typer.echo(f"  {change}")
        typer.echo("metrics:")
        for key, m in metrics.items():
            delta = f"  ({m['delta']:+.4g})" if m["delta"] is not None else ""
            typer.echo(f"  {key:<16} {_short_value(m['a'])} → {_short_value(m['b'])}{delta}")


def _short_value(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _load_all(paths: List[Path], overrides: Optional[List[str]], with_folders: bool = False):
    """Every spec under `paths`, validated before anything runs or is registered: all problems at once, exit 2.
    With `with_folders`, (spec, the folder of its file) pairs."""
    from flows.loader import Problem, SpecError, collect, load_any

    specs, problems = [], []
    for path in collect(paths):
        try:
            specs.append((load_any(path, overrides or []), Path(path).resolve().parent))
        except SpecError as exc:
            problems.extend(exc.problems)
    if not specs and not problems:
        problems.append(Problem(None, "", f"no spec files in {', '.join(map(str, paths))}"))
    if problems:
        raise SpecError(problems)
    return specs if with_folders else [spec for spec, _ in specs]


DataRootOption = typer.Option(None, "--data-root", metavar="DIR",
                              help="A folder the deployment's runs may read data from and write predictions to "
                                   "(repeatable); default: each spec's own folder. Recorded with the deployment.")


def _lanes(specs, artifacts: Optional[Path], roots: Optional[List[Path]]):
    """Each deployment's lanes: the artifact root and the data roots its runs are held to (`flows.lanes`)."""
    from flows.lanes import Lanes
    from flows.plan import artifact_root

    root = str(artifact_root(artifacts))
    return [(spec, Lanes(root, tuple(str(Path(r).resolve()) for r in roots) if roots else (str(folder),)))
            for spec, folder in specs]


@app.command()
def serve(paths: List[Path] = typer.Argument(..., help="Spec files or folders of them."),
          overrides: Optional[List[str]] = SetOption, artifacts: Optional[Path] = ArtifactsOption,
          poll: Optional[int] = typer.Option(None, "--poll", help="Seconds between checks for new runs."),
          data_roots: Optional[List[Path]] = DataRootOption, debug: bool = DebugOption) -> None:
    """Serve specs as Prefect deployments from this process; scheduled specs run on their schedule.

    Runs started through them (the UI, schedules, automations) write only to the artifact root and read only
    under the data roots chosen here. Stops cleanly on SIGINT/SIGTERM, pausing the schedules it served
    (restart to resume them)."""
    with _errors(debug):
        laned = _lanes(_load_all(paths, overrides, with_folders=True), artifacts, data_roots)
        from flows.deploy import deployment_name, serve_specs

        typer.echo(f"Serving {len(laned)} deployment(s): {', '.join(deployment_name(s) for s, _ in laned)}", err=True)
        serve_specs(laned, poll)


@app.command()
def deploy(paths: List[Path] = typer.Argument(..., help="Spec files or folders of them."),
           pool: str = typer.Option(..., "--pool", help="The Prefect work pool whose workers run them."),
           overrides: Optional[List[str]] = SetOption, artifacts: Optional[Path] = ArtifactsOption,
           data_roots: Optional[List[Path]] = DataRootOption, debug: bool = DebugOption) -> None:
    """Register specs as deployments on a work pool; `prefect worker start --pool POOL` runs them anywhere,
    held to the artifact root and data roots chosen here."""
    with _errors(debug):
        laned = _lanes(_load_all(paths, overrides, with_folders=True), artifacts, data_roots)
        from flows.deploy import deploy_specs, deployment_name

        ids = deploy_specs(laned, pool)
        for (spec, _), deployment_id in zip(laned, ids):
            typer.echo(f"{deployment_name(spec)}  {deployment_id}  pool={pool}")


@app.command()
def verify(name: Optional[str] = typer.Argument(None, help="NAME (all its versions), NAME@vN or NAME@ALIAS "
                                                            "(that one); every name when omitted."),
           artifacts: Optional[Path] = ArtifactsOption, debug: bool = DebugOption) -> None:
    """Check versions' files against the sha256 in their manifests; exit 1 if any is missing or altered."""
    with _errors(debug):
        from flows.plan import artifact_root
        from tasks.store import Store

        store = Store(artifact_root(artifacts))
        if name and "@" in name:
            chosen = [_version(name, artifacts)]
        else:
            if name and not store.versions(name):
                _unknown_name(store, name)
            chosen = [v for series in ([name] if name else store.names()) for v in store.versions(series)]
        bad = 0
        for version in chosen:
            problems = store.verify(version)
            bad += bool(problems)
            for problem in problems:
                typer.echo(f"{version.name}@{version.label}: {problem}", err=True)
        typer.echo(f"verified {len(chosen)} version(s): {len(chosen) - bad} intact, {bad} damaged")
        if bad:
            raise typer.Exit(1)


def _predict(model: str, input_path, output, artifacts, as_json: bool, debug: bool, label: str = "") -> None:
    """Score a file with a version; a bad reference or input is exit 2 before anything is scored (`api.predict`
    checks them before Prefect starts)."""
    with _errors(debug, label, failure="prediction failed"):
        from flows.api import predict
        from tasks.aliases import RefError
        from tasks.scoring import InputError

        try:
            if as_json:
                with _stdout_to_stderr() as real_stdout:
                    result = predict(model, input_path, output, artifacts, tracebacks=debug)
                real_stdout.write(json.dumps(result, default=str) + "\n")
                real_stdout.flush()
                return
            result = predict(model, input_path, output, artifacts, tracebacks=debug)
        except (RefError, InputError) as exc:
            if debug:
                raise
            _fail(f"{label}{exc}", 2)
    typer.echo(f"Scored {result['rows']} rows with {result['model']}: {result['output']}")
    summary = result["summary"]
    typer.echo("Classes: " + ", ".join(f"{k}: {v}" for k, v in summary["class_counts"].items()) if "class_counts"
               in summary else "Predictions: " + ", ".join(f"{k} {v:.5g}" for k, v in summary.items()
                                                          if isinstance(v, float)))
    if summary["unscored"]:
        from flows.predict import unscored_warning

        typer.echo(f"warning: {unscored_warning(summary['unscored'])}", err=True)
    _print_ui(result)


@app.command()
def predict(model: str = typer.Argument(..., help="NAME, NAME@vN or NAME@ALIAS (e.g. churn@production)."),
            input_path: Path = typer.Argument(..., metavar="INPUT", help="A CSV or Parquet file to score."),
            output: Path = typer.Option(..., "--output", "-o", help="Where to write the scored rows (.csv or .parquet)."),
            artifacts: Optional[Path] = ArtifactsOption, as_json: bool = JsonOption, debug: bool = DebugOption) -> None:
    """Score a file with a published version's saved model, as a Prefect flow run: the input's columns plus
    prediction (and one probability_<class> column per class)."""
    _predict(model, input_path, output, artifacts, as_json, debug)


@app.command()
def alias(ref: str = typer.Argument(..., help="NAME@vN to point the alias at (with --rollback: NAME)."),
          name: str = typer.Argument(..., metavar="ALIAS", help="The alias, e.g. production."),
          rollback: bool = typer.Option(False, "--rollback", help="Move the alias back to its previous holder."),
          artifacts: Optional[Path] = ArtifactsOption, debug: bool = DebugOption) -> None:
    """Set an alias by hand (recorded in the alias history as a person's move), or roll it back."""
    with _errors(debug):
        from flows.plan import artifact_root
        from tasks.aliases import AliasError, Aliases
        from tasks.store import Store

        store = Store(artifact_root(artifacts))
        series, _, label = ref.partition("@")
        if not store.versions(series):
            _unknown_name(store, series)
        if rollback == bool(label):
            _fail("give NAME@vN ALIAS to set an alias, or NAME ALIAS --rollback to move it back", 2)
        try:
            moved = Aliases(store, series).rollback(name) if rollback else Aliases(store, series).set(name, label)
        except AliasError as exc:
            _fail(str(exc), 2)
        from flows.events import alias_decision

        _quietly(alias_decision, series, moved)
        typer.echo(f"{series}@{name}: {moved['from'] or 'none'} → {moved['to']} ({moved['decision']})")


def _quietly(fn, *args) -> None:
    """Emit an event when a Prefect server is configured; a hand-made move must not wait for a temporary one."""
    import os

    from flows.server import use_running_server

    use_running_server()
    if os.environ.get("PREFECT_API_URL"):
        fn(*args)


@app.command()
def compare(name: str = typer.Argument(..., help="A spec name."), artifacts: Optional[Path] = ArtifactsOption,
            as_json: bool = JsonOption, debug: bool = DebugOption) -> None:
    """One row per version: aliases, the settings that differ between versions, and every metric."""
    with _errors(debug):
        from flows.plan import artifact_root
        from tasks.compare import comparison
        from tasks.store import Store

        store = Store(artifact_root(artifacts))
        if not store.versions(name):
            _unknown_name(store, name)
        settings, rows = comparison(store, name)
        if as_json:
            typer.echo(json.dumps({"name": name, "settings": settings, "rows": rows}))
            return
        columns = list(rows[0])
        widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns}
        typer.echo("  ".join(c.ljust(widths[c]) for c in columns))
        for row in rows:
            typer.echo("  ".join(_cell(row.get(c)).ljust(widths[c]) for c in columns))


def _cell(value) -> str:
    return "" if value is None else (f"{value:.5g}" if isinstance(value, float) else str(value))


server_app = typer.Typer(no_args_is_help=True, help="A local Prefect server with the UI, in the background, on "
                                                     "PREFECT_HOME's database; runs use it by themselves.")
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start(port: Optional[int] = typer.Option(None, "--port", help="Port of the API and UI (default 4200, or a "
                                                                        "free one; 0 picks a free one).")) -> None:
    """Start it (or report the one running), wait until it answers, and print the UI's address."""
    from flows import server

    try:
        record, started = server.start(None if port is None else (port or server.free_port()))
    except RuntimeError as exc:
        _fail(f"server start failed: {exc}", 1)
    verb = "Started" if started else "Already running:"
    typer.echo(f"{verb} Prefect server (pid {record.pid}): UI {record.ui_url}, API {record.api_url}")
    typer.echo("trainflow commands use it while it runs; `trainflow server stop` stops it.")


@server_app.command("stop")
def server_stop() -> None:
    """Stop it; runs then fall back to Prefect's temporary server."""
    from flows import server

    record = server.stop()
    typer.echo(f"Stopped Prefect server (pid {record.pid})" if record else "no trainflow server was running")


@server_app.command("status")
def server_status(as_json: bool = typer.Option(False, "--json", help="Print a JSON object.")) -> None:
    """Whether it runs, and where. A record left by a server that died is cleared."""
    from flows import server

    record = server.running()
    if as_json:
        typer.echo(json.dumps({"running": record is not None, "pid": record and record.pid,
                               "api_url": record and record.api_url, "ui_url": record and record.ui_url,
                               "prefect_home": str(server.prefect_home())}))
        return
    typer.echo(f"running (pid {record.pid}): UI {record.ui_url}" if record else
               f"not running (PREFECT_HOME {server.prefect_home()}); `trainflow server start` starts it")


def main() -> None:
    from flows import process

    process.install()
    try:
        app()
    except SystemExit as done:
        process.set_exit_code(done.code)
        raise


if __name__ == "__main__":
    main()
