"""Prefect deployments and the local server: `trainflow serve`, `deploy` and `server start|stop|status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from flows.cli.app import ArtifactsOption, DebugOption, SetOption, app, errors, fail, load_all

DataRootOption = typer.Option(None, "--data-root", metavar="DIR",
                              help="A folder the deployment's runs may read data from and write predictions to "
                                   "(repeatable); default: each spec's own folder. Recorded with the deployment.")


AllowCodeOption = typer.Option(None, "--allow-code", metavar="MODULE",
                               help="A module a python model's builder may come from in the deployments' runs "
                                    "(repeatable); without it a run with a python model is refused before "
                                    "importing anything. Recorded and signed with the deployment. Layer stacks "
                                    "need none.")


def _lanes(specs, artifacts: Optional[Path], roots: Optional[List[Path]], allowed: Optional[List[str]] = None):
    """Each deployment's lanes: the artifact root and the data roots its runs are held to, the modules its python
    models may import and the folders they are looked up in (`flows.serve.lanes`). A spec whose python model's
    module was not allowed is refused here, exit 2, before anything is registered."""
    from flows.run.plan import artifact_root
    from flows.serve.lanes import Lanes

    allowed_code = tuple(dict.fromkeys(allowed or ()))
    folders = {spec.name: code_folders(spec, path, allowed_code) for spec, path in specs}
    root = str(artifact_root(artifacts))
    return [(spec, Lanes(root, tuple(str(Path(r).resolve()) for r in roots) if roots else (str(path.parent),),
                         allowed_code, folders[spec.name]))
            for spec, path in specs]


def code_folders(spec, path: Path, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The folders the spec's python models (its own, each schedule's overrides, each swept variant) are
    looked up in; SpecError at model.builder for a module not in `allowed`."""
    from flows.spec import Spec
    from flows.spec.document import Problem, SpecError, locate
    from flows.spec.load import sweep_candidates, trial_spec

    if not isinstance(spec, Spec):
        return ()
    from flows.api import as_spec

    variants = [spec] + [as_spec(spec, entry.overrides) for entry in spec.schedule if entry.overrides]
    variants += [trial_spec(spec, {p: v}) for _, p, v in sweep_candidates(spec) if p.split(".")[0] == "model"]
    folders, problems = [], []
    for variant in variants:
        model = variant.model
        if getattr(model, "kind", None) != "python":
            continue
        module = model.builder.partition(":")[0]
        if module not in allowed:
            where = locate(spec._document, ("model", "builder")) if spec._document else None
            problems.append(Problem(where, "model.builder", f"a deployment runs a python model only from a module "
                                                           f"allowed when it is made: add --allow-code {module} "
                                                           f"(its runs may then import {module} from {model.path})"))
        folders.append(str(Path(model.path).resolve()))
    if problems:
        raise SpecError(dict.fromkeys(problems))  # one line per module, however many variants name it
    return tuple(dict.fromkeys(folders))


@app.command()
def serve(paths: List[Path] = typer.Argument(..., help="Spec files or folders of them."),
          overrides: Optional[List[str]] = SetOption, artifacts: Optional[Path] = ArtifactsOption,
          poll: Optional[int] = typer.Option(None, "--poll", help="Seconds between checks for new runs."),
          data_roots: Optional[List[Path]] = DataRootOption, allow_code: Optional[List[str]] = AllowCodeOption,
          debug: bool = DebugOption) -> None:
    """Serve specs as Prefect deployments from this process; scheduled specs run on their schedule.

    Runs started through them (the UI, schedules, automations) write only to the artifact root and read only
    under the data roots chosen here. Stops cleanly on SIGINT/SIGTERM, pausing the schedules it served
    (restart to resume them)."""
    with errors(debug):
        laned = _lanes(load_all(paths, overrides, with_paths=True), artifacts, data_roots, allow_code)
        from flows.process.startup import prepare

        prepare(debug)  # before flows.serve.deploy imports Prefect
        from flows.serve.deploy import deployment_name, serve_specs

        typer.echo(f"Serving {len(laned)} deployment(s): {', '.join(deployment_name(s) for s, _ in laned)}", err=True)
        serve_specs(laned, poll)


@app.command()
def deploy(paths: List[Path] = typer.Argument(..., help="Spec files or folders of them."),
           pool: str = typer.Option(..., "--pool", help="The Prefect work pool whose workers run them."),
           overrides: Optional[List[str]] = SetOption, artifacts: Optional[Path] = ArtifactsOption,
           data_roots: Optional[List[Path]] = DataRootOption, allow_code: Optional[List[str]] = AllowCodeOption,
           debug: bool = DebugOption) -> None:
    """Register specs as deployments on a work pool; `prefect worker start --pool POOL` runs them anywhere,
    held to the artifact root and data roots chosen here."""
    with errors(debug):
        laned = _lanes(load_all(paths, overrides, with_paths=True), artifacts, data_roots, allow_code)
        from flows.process.startup import prepare

        prepare(debug)  # before flows.serve.deploy imports Prefect
        from flows.serve.deploy import deploy_specs, deployment_name

        ids = deploy_specs(laned, pool)
        for (spec, _), deployment_id in zip(laned, ids):
            typer.echo(f"{deployment_name(spec)}  {deployment_id}  pool={pool}")


server_app = typer.Typer(no_args_is_help=True, help="A local Prefect server with the UI, in the background, on "
                                                     "PREFECT_HOME's database; runs use it by themselves. The first "
                                                     "run or predict that finds none starts one, which stops after "
                                                     "TRAINFLOW_SERVER_IDLE_MINUTES (default 30) idle; one started "
                                                     "here runs until stopped.")
app.add_typer(server_app, name="server")


def _lifetime(record) -> str:
    if not record.auto:
        return "started by `trainflow server start`: runs until `trainflow server stop`"
    if record.idle_minutes is None or record.idle_minutes == float("inf"):
        return "auto-started by a command, with no idle limit: runs until `trainflow server stop`"
    return f"auto-started by a command: stops by itself after {record.idle_minutes:g} min idle"


@server_app.command("start")
def server_start(port: Optional[int] = typer.Option(None, "--port", help="Port of the API and UI (default 4200, or a "
                                                                        "free one; 0 picks a free one).")) -> None:
    """Start it (or report the one running), wait until it answers, and print the UI's address. It never stops
    by itself; one a command started is kept from now on."""
    from flows.serve import server

    was = server.running()
    try:
        record, started = server.start(None if port is None else (port or server.free_port()))
    except RuntimeError as exc:
        fail(f"server start failed: {exc}", 1)
    verb = "Started" if started else "Already running:"
    typer.echo(f"{verb} Prefect server (pid {record.pid}): UI {record.ui_url}, API {record.api_url}")
    if was is not None and was.auto:
        typer.echo("It was started by a command; it now runs until `trainflow server stop` (no idle stop).")
    typer.echo("trainflow commands use it while it runs; `trainflow server stop` stops it.")


@server_app.command("stop")
def server_stop() -> None:
    """Stop it; the next run or predict starts one again (or, with --no-server, uses Prefect's temporary one)."""
    from flows.serve import server

    record = server.stop()
    typer.echo(f"Stopped Prefect server (pid {record.pid})" if record else "no trainflow server was running")


@server_app.command("status")
def server_status(as_json: bool = typer.Option(False, "--json", help="Print a JSON object.")) -> None:
    """Whether it runs, where, and whether a command started it (then its idle limit). A record left by a
    server that died is cleared."""
    from flows.serve import server

    record = server.running()
    if as_json:
        typer.echo(json.dumps({"running": record is not None, "pid": record and record.pid,
                               "api_url": record and record.api_url, "ui_url": record and record.ui_url,
                               "auto": record is not None and record.auto,
                               "idle_minutes": record.idle_minutes if record is not None else None,
                               "prefect_home": str(server.prefect_home())}))
        return
    typer.echo(f"running (pid {record.pid}): UI {record.ui_url}; {_lifetime(record)}" if record else
               f"not running (PREFECT_HOME {server.prefect_home()}); the next run starts one, or `trainflow server "
               "start`")
