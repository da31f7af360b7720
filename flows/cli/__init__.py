"""The `trainflow` command line (`flows/cli/app.py` holds the app; each module beside it a group of commands)."""

from __future__ import annotations

from flows.cli import browse, lifecycle, run, servers, serving  # noqa: F401  (each registers its commands on the app)
from flows.cli.app import app


def main() -> None:
    from flows.process import ending

    ending.install()
    try:
        app()
    except SystemExit as done:
        ending.set_exit_code(done.code)
        raise
