"""The `trainflow` command line: the Typer app, the options every command shares, and the one error handler.

Commands live by group: `flows/cli/run.py` (run, validate, schema, plan), `browse.py` (list, show, diff,
verify, compare), `lifecycle.py` (predict, alias), `servers.py` (serve, deploy, server), `serving.py` (serve-model). Commands that do
not train (`--help`, `validate`, `schema`, `plan`, `list`, `show`, `diff`) import neither TensorFlow nor
matplotlib nor Prefect, so they answer at once. Exit codes: 0 success, 1 a run that failed, 2 an invalid
spec or usage (and then nothing is written). Errors are one line per problem, position first; `--debug`
adds the traceback.
"""

from __future__ import annotations

import contextlib
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
NoServerOption = typer.Option(False, "--no-server", help="With no Prefect server running, use Prefect's temporary "
                                                         "server for this command (~10 s each time) instead of "
                                                         "starting one in the background for this and later "
                                                         "commands (which stops after "
                                                         "TRAINFLOW_SERVER_IDLE_MINUTES, default 30, idle); "
                                                         "TRAINFLOW_NO_SERVER=1 does the same for every command.")


def fail(message: str, code: int) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def check_server_settings() -> None:
    """A bad TRAINFLOW_SERVER_IDLE_MINUTES is usage (exit 2), said before anything runs."""
    from flows.serve.server import idle_minutes

    try:
        idle_minutes()
    except ValueError as exc:
        fail(str(exc), 2)


@contextlib.contextmanager
def errors(debug: bool, label: str = "", failure: str = "failed") -> Iterator[None]:
    """Every command's error handler: exceptions to exit codes and one-screen messages prefixed with `label`;
    a traceback only with --debug."""
    from flows.spec.document import SpecError

    try:
        yield
    except SpecError as exc:
        if debug:
            raise
        fail(label + str(exc), 2)
    except typer.Exit:
        raise
    except BrokenPipeError:  # stdout closed early (e.g. `| head`): not a failure of ours
        os._exit(0)
    except KeyboardInterrupt:
        fail("interrupted; nothing was published", 130)
    except Exception as exc:  # a failed run (the task's own exception) or an unexpected error
        if debug:
            raise
        from flows.process.outcome import PublishedThenFailed

        if getattr(exc, "server_lost", False):  # Prefect's event and log queues would wait on it for minutes
            published = isinstance(exc, PublishedThenFailed)
            typer.echo(f"{label}{failure}{' after publishing' if published else ''}: {exc}"
                       + ("" if published or failure != "run failed" else " (nothing was published for it)"), err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)  # the temporary server, if any, is stopped by its watchdog (flows.process.watchdog)
        if isinstance(exc, PublishedThenFailed):
            fail(f"{label}run failed after publishing: {exc} (--debug shows the traceback)", 1)
        if failure == "run failed":
            reason = str(exc) or type(exc).__name__  # a MemoryError (an OOM) has no message
            fail(f"{label}run failed: {reason}\n(nothing was published for it; --debug shows the traceback)", 1)
        fail(f"{label}{failure}: {type(exc).__name__}: {exc} (--debug shows the traceback)", 1)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[Any]:
    """Send everything written to fd 1 (Python or C++) to stderr, keeping a handle on the real stdout.

    When stdout is not fd 1 (the command runs inside another program that captures its output: a test, a
    notebook), only Python's stdout is redirected, and the handle is that program's stdout."""
    try:
        on_fd_1 = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):
        on_fd_1 = False
    if not on_fd_1:
        real = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            yield real
        return
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


def load_one(spec_path: Path, overrides: Optional[List[str]]):
    from flows.spec.load import load_spec

    return load_spec(spec_path, overrides or [])


def print_ui(result: dict) -> None:
    """Where this run is in the Prefect UI, or how to get there after a temporary server."""
    if result.get("ui_url"):
        typer.echo(f"Prefect UI: {result['ui_url']}")
    else:
        typer.echo("Prefect UI: `trainflow server start` (or `make ui`) serves every run so far, this one included")


def manifest_of(version) -> dict:
    """A version's manifest, or an empty one when it cannot be read (`verify` says why)."""
    try:
        return version.manifest()
    except (OSError, ValueError):
        return {}


def unknown_name(store, name: str) -> None:
    known = store.names()
    from tasks.common.suggest import did_you_mean

    fail(f"{name}: no versions{did_you_mean(name, known)}; known: {', '.join(known) or 'none'}", 2)


def version_ref(ref: str, artifacts: Optional[Path]):
    """The version `ref` names (NAME, NAME@vN, NAME@ALIAS); exit 2 listing what exists when it names none."""
    from flows.run.plan import artifact_root
    from tasks.lifecycle.aliases import RefError, resolve

    try:
        return resolve(ref, artifact_root(artifacts))
    except RefError as exc:
        fail(str(exc), 2)


def load_all(paths: List[Path], overrides: Optional[List[str]], with_paths: bool = False):
    """Every spec under `paths`, validated before anything runs or is registered: all problems at once, exit 2.
    With `with_paths`, (spec, its file, resolved) pairs."""
    from flows.spec.document import Problem, SpecError
    from flows.spec.load import collect, load_any

    specs, problems = [], []
    for path in collect(paths):
        try:
            specs.append((load_any(path, overrides or []), Path(path).resolve()))
        except SpecError as exc:
            problems.extend(exc.problems)
    if not specs and not problems:
        problems.append(Problem(None, "", f"no spec files in {', '.join(map(str, paths))}"))
    if problems:
        raise SpecError(problems)
    return specs if with_paths else [spec for spec, _ in specs]
