"""Browsing published versions: `trainflow list`, `show`, `diff`, `verify` and `compare`. None of them imports
TensorFlow or Prefect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from flows.cli.app import (
    ArtifactsOption,
    DebugOption,
    JsonOption,
    app,
    errors,
    fail,
    manifest_of,
    unknown_name,
    version_ref,
)


@app.command("list")
def list_versions(name: Optional[str] = typer.Argument(None, help="A spec name; all names when omitted."),
                  artifacts: Optional[Path] = ArtifactsOption, as_json: bool = JsonOption,
                  debug: bool = DebugOption) -> None:
    """List published versions with date, metrics and spec hash; sweeps are marked, their trials inside them."""
    with errors(debug):
        from flows.run.plan import artifact_root
        from tasks.lifecycle.aliases import Aliases
        from tasks.publish.store import Store

        store = Store(artifact_root(artifacts))
        if name and not store.versions(name):
            unknown_name(store, name)
        rows = []
        for series in [name] if name else store.names():
            aliases = Aliases(store, series)
            for version in store.versions(series):
                manifest = manifest_of(version)
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


def _seconds(value) -> str:
    return f"{value:.3f}s" if isinstance(value, (int, float)) else "-"


@app.command()
def show(ref: str = typer.Argument(..., help="NAME or NAME@vN."), artifacts: Optional[Path] = ArtifactsOption,
         as_json: bool = JsonOption, debug: bool = DebugOption) -> None:
    """Show a version's manifest: metrics, tasks, and a sweep's trials."""
    with errors(debug):
        manifest = version_ref(ref, artifacts).manifest()
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
    with errors(debug):
        from flows.run.plan import changed_paths

        newer = version_ref(b or a, artifacts)
        if b is None:
            previous = newer.manifest().get("previous")
            if previous is None:
                fail(f"{a}: is the first version of {newer.name}; nothing before it to compare with", 2)
            older = version_ref(f"{newer.name}@{previous}", artifacts)
        else:
            older = version_ref(a, artifacts)
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


@app.command()
def verify(name: Optional[str] = typer.Argument(None, help="NAME (all its versions), NAME@vN or NAME@ALIAS "
                                                            "(that one); every name when omitted."),
           artifacts: Optional[Path] = ArtifactsOption, debug: bool = DebugOption) -> None:
    """Check versions' files against the sha256 in their manifests; exit 1 if any is missing or altered."""
    with errors(debug):
        from flows.run.plan import artifact_root
        from tasks.publish.store import Store

        store = Store(artifact_root(artifacts))
        if name and "@" in name:
            chosen = [version_ref(name, artifacts)]
        else:
            if name and not store.versions(name):
                unknown_name(store, name)
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


@app.command()
def compare(name: str = typer.Argument(..., help="A spec name."), artifacts: Optional[Path] = ArtifactsOption,
            as_json: bool = JsonOption, debug: bool = DebugOption) -> None:
    """One row per version: aliases, the settings that differ between versions, and every metric."""
    with errors(debug):
        from flows.run.plan import artifact_root
        from tasks.lifecycle.compare import comparison
        from tasks.publish.store import Store

        store = Store(artifact_root(artifacts))
        if not store.versions(name):
            unknown_name(store, name)
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
