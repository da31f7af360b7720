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
    app,
    errors,
    fail,
    manifest_of,
    unknown_name,
    version_ref,
)

BrowseJsonOption = typer.Option(False, "--json", help="Print JSON on stdout instead of the table.")


@app.command("list")
def list_versions(name: Optional[str] = typer.Argument(None, help="A spec name; all names when omitted."),
                  artifacts: Optional[Path] = ArtifactsOption, as_json: bool = BrowseJsonOption,
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
                best = manifest.get("best") or {}
                rows.append({"name": series, "version": version.label, "path": str(version.path),
                             "aliases": aliases.of(version.label),
                             "kind": manifest.get("kind", "experiment"), "created": manifest.get("created"),
                             "spec_hash": manifest.get("spec_hash"), "metrics": manifest.get("metrics", {}),
                             "trials": len(manifest.get("trials", [])) or None,
                             "best_trial": {"id": best["id"], "values": best.get("values", {})} if best.get("id")
                             else None,
                             "metric": ((manifest.get("spec") or {}).get("sweep") or {}).get("metric")})
        if as_json:
            typer.echo(json.dumps(rows))
            return
        if not rows:
            typer.echo("no versions" + (f" of {name}" if name else ""))
        for row in rows:
            first = [row.pop("metric")] if row.get("metric") in row["metrics"] else []
            names = dict.fromkeys(first + [k for k in row["metrics"] if not k.startswith("best_")])
            metrics = ", ".join(f"{k}={row['metrics'][k]:.4g}" for k in names if isinstance(row["metrics"][k], float))
            kind = ""
            if row["kind"] == "sweep":
                best = row["best_trial"]
                values = ", ".join(f"{k}={v}" for k, v in best["values"].items()) if best else ""
                kind = f"  sweep of {row['trials']} trials, best trial {best['id']} ({values}):" if best else \
                    f"  sweep of {row['trials']} trials, no trial finished"
            held = f"  [{', '.join(row['aliases'])}]" if row["aliases"] else ""
            typer.echo(f"{row['name']}@{row['version']}{held}  {row['created']}  spec {str(row['spec_hash'])[:8]}"
                       f"{kind} {' ' if not kind else ''}{metrics}")


def _seconds(value) -> str:
    return f"{value:.3f}s" if isinstance(value, (int, float)) else "-"


@app.command()
def show(ref: str = typer.Argument(..., help="NAME or NAME@vN."), artifacts: Optional[Path] = ArtifactsOption,
         as_json: bool = BrowseJsonOption, debug: bool = DebugOption) -> None:
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
         as_json: bool = BrowseJsonOption, debug: bool = DebugOption) -> None:
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
        from tasks.lifecycle.compare import judge

        metrics = {k: {"a": ma["metrics"].get(k), "b": mb["metrics"].get(k),
                       "delta": (mb["metrics"][k] - ma["metrics"][k]) if isinstance(ma["metrics"].get(k), (int, float))
                       and isinstance(mb["metrics"].get(k), (int, float)) else None,
                       "change": judge(k, ma["metrics"].get(k), mb["metrics"].get(k))}
                   for k in sorted(set(ma["metrics"]) | set(mb["metrics"]))}
        data = _data_change(ma, mb)
        if as_json:
            typer.echo(json.dumps({"a": f"{older.name}@{older.label}", "b": f"{newer.name}@{newer.label}",
                                   "spec": changes, "data": data, "metrics": metrics}))
            return
        typer.echo(f"{older.name}@{older.label} → {newer.name}@{newer.label}")
        typer.echo("spec:" if changes else "spec: identical")
        for change in changes:
            typer.echo(f"  {change}")
        if data:
            typer.echo(f"data: {data['what']}")
        typer.echo("metrics (better or worse by each metric's direction: accuracy, auc, r2 up; losses, rmse, mae down):")
        for key, m in metrics.items():
            delta = f"  ({m['delta']:+.4g}{', ' + m['change'] if m['change'] else ''})" if m["delta"] is not None else ""
            typer.echo(f"  {key:<16} {_short_value(m['a'])} → {_short_value(m['b'])}{delta}")


def _data_change(older: dict, newer: dict) -> Optional[dict]:
    """What changed in the data file's (or the pictures') content between two versions, as their data tasks'
    keys recorded it: the same spec can read other data (a file rewritten in place, a picture added)."""
    def content(manifest: dict) -> Optional[dict]:
        data = next((t for t in manifest.get("tasks", []) if t.get("name") == "data"), {})
        return (data.get("inputs") or {}).get("file")

    a, b = content(older), content(newer)
    if a == b or a is None or b is None:
        return None
    if "images" in a and "images" in b:
        what = f"the pictures' content changed ({a.get('count', 0):,} → {b.get('count', 0):,} pictures)"
    else:
        what = (f"the file's content changed (sha256 {str(a.get('sha256'))[:12]} → {str(b.get('sha256'))[:12]}, "
                f"{a.get('size', 0):,} → {b.get('size', 0):,} bytes)")
    return {"what": what, "a": a, "b": b}


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
        from tasks.lifecycle.aliases import series_problems

        bad = 0
        for version in chosen:
            problems = store.verify(version)
            bad += bool(problems)
            for problem in problems:
                typer.echo(f"{version.name}@{version.label}: {problem}", err=True)
        links = [(series, problem) for series in sorted({v.name for v in chosen})
                 for problem in series_problems(store, series)]
        for series, problem in links:
            typer.echo(f"{series}: {problem}", err=True)
        typer.echo(f"verified {len(chosen)} version(s): {len(chosen) - bad} intact, {bad} damaged"
                   + (f"; {len(links)} problem(s) with latest or aliases" if links else ""))
        if bad or links:
            raise typer.Exit(1)


@app.command()
def compare(name: str = typer.Argument(..., help="A spec name."),
            metrics: Optional[str] = typer.Option(None, "--metrics", "-m", metavar="A,B",
                                                  help="The metrics to show, comma-separated (default: the gate's or "
                                                       "sweep's metric and the held-out split's metrics)."),
            sort: Optional[str] = typer.Option(None, "--sort", metavar="COLUMN",
                                               help="Sort by a metric, best first (or by a setting, ascending)."),
            artifacts: Optional[Path] = ArtifactsOption,
            as_json: bool = typer.Option(False, "--json", help="Print one JSON object: the differing settings and "
                                                               "one row per version (every metric, unless --metrics)."),
            debug: bool = DebugOption) -> None:
    """One row per version: aliases, the settings that differ between versions, and its metrics; sized to the
    terminal (columns that do not fit are named below the table)."""
    with errors(debug):
        from flows.run.plan import artifact_root
        from tasks.lifecycle.compare import comparison, headline, sort_rows
        from tasks.publish.store import Store

        store = Store(artifact_root(artifacts))
        if not store.versions(name):
            unknown_name(store, name)
        settings, rows = comparison(store, name)
        known = [c for c in rows[0] if c not in ("version", "aliases", "created") and c not in settings]
        chosen = _pick(metrics.split(",") if metrics else None, known, "--metrics")
        if sort:
            _pick([sort], known + settings, "--sort")
            rows = sort_rows(rows, sort)
        if chosen is None:
            latest = manifest_of(store.versions(name)[-1]).get("spec") or {}
            chosen = headline(known, ((latest.get("promote") or latest.get("sweep")) or {}).get("metric"))
            if sort in known and sort not in chosen:
                chosen.append(sort)
        if as_json:
            shown = rows if metrics is None else [{k: v for k, v in r.items() if k not in known or k in chosen}
                                                  for r in rows]
            typer.echo(json.dumps({"name": name, "settings": settings, "rows": shown}))
            return
        _print_table(rows, ["version", "aliases", "created", *settings, *chosen], [m for m in known if m not in chosen],
                     first=["version", *chosen, *settings, "aliases"])


def _pick(names: Optional[list[str]], known: list[str], option: str) -> Optional[list[str]]:
    """The names asked for, each one known; exit 2 with "did you mean" otherwise."""
    if names is None:
        return None
    from tasks.common.suggest import did_you_mean

    names = [n.strip() for n in names if n.strip()]
    for n in names:
        if n not in known:
            fail(f"{option}: no column '{n}'{did_you_mean(n, known)}; there are: {', '.join(known)}", 2)
    return names


def _print_table(rows: list[dict], columns: list[str], hidden: list[str], first: Optional[list[str]] = None) -> None:
    """Columns as wide as their cells (a long setting cut short), settings headed by their shortest unique suffix,
    in `columns`' order; when the terminal is too narrow, the columns are kept in the order of `first` (the
    metrics before the settings, say) as long as they fit, and what was left out is named below."""
    import shutil

    width = shutil.get_terminal_size((120, 24)).columns
    headers = _short_headers(columns)
    cells = {c: [_cell(r.get(c)) if c != "created" else str(r.get(c) or "")[:16].replace("T", " ") for r in rows]
             for c in columns}
    widths = {c: max(len(headers[c]), *(len(v) for v in cells[c])) for c in columns}
    kept, used = set(), -2
    for c in dict.fromkeys([*(first or []), *columns]):
        if c in widths and (used + 2 + widths[c] <= width or len(kept) < 2):
            kept.add(c)
            used += 2 + widths[c]
    shown = [c for c in columns if c in kept]
    hidden = [c for c in columns if c not in kept and c not in ("aliases", "created")] + hidden
    typer.echo("  ".join(headers[c].ljust(widths[c]) for c in shown).rstrip())
    for i in range(len(rows)):
        typer.echo("  ".join(cells[c][i].ljust(widths[c]) for c in shown).rstrip())
    renamed = [f"{headers[c]} = {c}" for c in shown if headers[c] != c]
    if renamed:
        typer.echo("settings: " + ", ".join(renamed))
    if hidden:
        typer.echo(f"not shown: {', '.join(hidden)} (--metrics A,B picks; --json has every one)")


def _short_headers(columns: list[str]) -> dict[str, str]:
    """Each dotted setting by its shortest suffix no other column ends with (training.optimizer.learning_rate:
    learning_rate)."""
    out = {}
    for c in columns:
        parts = c.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(o != c and (o == suffix or o.endswith("." + suffix)) for o in columns):
                break
        out[c] = suffix
    return out


#: A cell of `compare`'s table shows at most this many characters (a list of layers, a sweep's grid).
MAX_CELL = 24


def _cell(value) -> str:
    text = "" if value is None else (f"{value:.5g}" if isinstance(value, float) else str(value))
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"
