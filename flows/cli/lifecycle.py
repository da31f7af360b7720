"""A version's life after publishing: `trainflow predict` (score a file) and `trainflow alias` (move a name)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from flows.cli.app import (
    ArtifactsOption,
    DebugOption,
    JsonOption,
    NoServerOption,
    app,
    check_server_settings,
    errors,
    fail,
    print_ui,
    stdout_to_stderr,
    unknown_name,
)


def predict_file(model: str, input_path, output, artifacts, as_json: bool, debug: bool, label: str = "",
                 no_server: bool = False, strict: bool = False) -> None:
    """Score a file with a version; a bad reference or input is exit 2 before anything is scored (`api.predict`
    checks them before Prefect starts)."""
    with errors(debug, label, failure="prediction failed"):
        from flows.api import predict
        from tasks.lifecycle.aliases import RefError
        from tasks.scoring.model import InputError

        try:
            if as_json:
                with stdout_to_stderr() as real_stdout:
                    result = predict(model, input_path, output, artifacts, tracebacks=debug, no_server=no_server)
                real_stdout.write(json.dumps(result, default=str) + "\n")
                real_stdout.flush()
                _strict(result["summary"], strict)
                return
            result = predict(model, input_path, output, artifacts, tracebacks=debug, no_server=no_server)
        except (RefError, InputError) as exc:
            if debug:
                raise
            fail(f"{label}{exc}", 2)
    trial = f", trial {result['trial']} (the sweep's best)" if result.get("trial") else ""
    summary = result["summary"]
    done = f"{result['rows'] - summary['unscored']} of {result['rows']}" if summary["unscored"] else f"{result['rows']}"
    typer.echo(f"Scored {done} rows with {result['model']}{trial}: {result['output']}")
    typer.echo("Predicted classes: " + ", ".join(f"{k}: {v}" for k, v in summary["class_counts"].items()) if "class_counts"
               in summary else "Predictions: " + ", ".join(f"{k} {v:.5g}" for k, v in summary.items()
                                                          if isinstance(v, float)))
    if summary.get("unseen"):
        typer.echo("Unseen categories: " + ", ".join(f"{column}: {count}" for column, count in summary["unseen"].items()))
    from flows.lifecycle.predict import warnings

    if summary.get("accuracy") is not None:
        typer.echo(f"Accuracy against the class subfolders: {summary['accuracy']:.4f}")
    for warning in warnings(summary):
        typer.echo(f"warning: {warning}", err=True)
    print_ui(result)
    _strict(summary, strict)


def _strict(summary: dict, strict: bool) -> None:
    if strict and summary.get("unreadable"):
        named = "; ".join(summary.get("unreadable_files", []))
        fail(f"{summary['unreadable']} picture(s) could not be decoded (--strict; the others are scored in the "
             f"output): {named}", 2)


@app.command()
def predict(model: str = typer.Argument(..., help="NAME, NAME@vN or NAME@ALIAS (e.g. churn@production)."),
            input_path: Path = typer.Argument(..., metavar="INPUT", help="A CSV or Parquet file to score; for a model "
                                              "trained on arrays, an .npz archive or a folder of .npy files; for "
                                              "one trained on images, a folder of pictures (subfolders included) "
                                              "or an index .csv with a path column."),
            output: Path = typer.Option(..., "--output", "-o", help="Where to write the scored rows (.csv or .parquet)."),
            artifacts: Optional[Path] = ArtifactsOption, as_json: bool = JsonOption, no_server: bool = NoServerOption,
            debug: bool = DebugOption,
            strict: bool = typer.Option(False, "--strict", help="Images: exit 2 when a picture cannot be decoded "
                                        "(it is still counted and named; the other pictures are still scored)."),
            ) -> None:
    """Score a file with a published version's saved model, as a Prefect flow run: the input's columns plus
    prediction (and one probability_<class> column per class). A model trained on images writes path (and
    actual, when the pictures sit in class subfolders), prediction and probability_<class>.

    With no Prefect server running, it starts one in the background and says so (see --no-server)."""
    check_server_settings()
    predict_file(model, input_path, output, artifacts, as_json, debug, no_server=no_server, strict=strict)


@app.command()
def alias(ref: str = typer.Argument(..., help="NAME@vN to point the alias at (with --rollback: NAME)."),
          name: str = typer.Argument(..., metavar="ALIAS", help="The alias, e.g. production."),
          rollback: bool = typer.Option(False, "--rollback", help="Move the alias back to its previous holder."),
          artifacts: Optional[Path] = ArtifactsOption, debug: bool = DebugOption) -> None:
    """Set an alias by hand (recorded in the alias history as a person's move), or roll it back."""
    with errors(debug):
        from flows.run.plan import artifact_root
        from tasks.lifecycle.aliases import AliasError, Aliases
        from tasks.publish.store import Store

        store = Store(artifact_root(artifacts))
        series, _, label = ref.partition("@")
        if not store.versions(series):
            unknown_name(store, series)
        if rollback == bool(label):
            fail("give NAME@vN ALIAS to set an alias, or NAME ALIAS --rollback to move it back", 2)
        try:
            moved = Aliases(store, series).rollback(name) if rollback else Aliases(store, series).set(name, label)
        except AliasError as exc:
            fail(str(exc), 2)
        typer.echo(f"{series}@{name}: {moved['from'] or 'none'} → {moved['to']} ({moved['decision']})")
        _announce(series, moved, debug)


def _announce(series: str, moved: dict, debug: bool) -> None:
    """`trainflow.alias.moved` to the server this process chose, delivered before the command ends. Without a
    running server nothing is sent: a temporary server would cost seconds and drop the event when it stops."""
    from flows.lifecycle import events

    event = events.alias_event(series, moved)
    if event is None:
        return  # it already held the alias: nothing happened
    from flows.process.startup import prepare

    if prepare(debug).api_url is None:
        typer.echo("(no Prefect server is running, so no event was sent; `trainflow server start` runs one)", err=True)
        return
    events.send_now(event)
