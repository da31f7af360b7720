"""A run's epoch lines reach its user once: on a terminal (stdout and stderr one destination) the run log shows
them as training goes and the closing report does not repeat them; a stdout of its own still gets them all."""

from __future__ import annotations

import os
import pty
import re
import subprocess

import pytest

from tests.conftest import BIN, GUIDE_SMALL, ROOT, trainflow, write_spec

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]  # whole runs that train: `make test` runs them, `make test-fast` skips them


def _on_a_terminal(*args: str) -> str:
    """Run `trainflow ARGS` with a pseudo-terminal as stdout and stderr, as a user at a shell; what it showed."""
    main, secondary = pty.openpty()
    proc = subprocess.Popen([str(BIN / "trainflow"), *args], stdout=secondary, stderr=secondary, cwd=ROOT)
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        shown += chunk
    proc.wait(timeout=300)
    os.close(main)
    assert proc.returncode == 0, shown.decode(errors="replace")[-3000:]
    return shown.decode(errors="replace")


@pytest.mark.slow  # starts processes that import TensorFlow
def test_on_a_terminal_each_epoch_line_is_shown_once(tmp_path, artifacts):
    first = write_spec(tmp_path, GUIDE_SMALL)
    again = write_spec(tmp_path, GUIDE_SMALL, "again.yaml")  # the same spec: its run is a cached re-run
    # own process: a terminal shared by stdout and stderr is the point, and only a process of its own has one
    shown = _on_a_terminal("run", str(first), str(again))
    trained, rerun = shown.split("Published small v0001", 1)
    for epoch in range(1, 6):
        assert len(re.findall(rf"Epoch +{epoch}: W = ", trained)) == 1, shown
    assert "(initial state; epochs 1-5 are in the run log above)" in trained
    # a cached re-run trains nothing, so its log shows no epochs: the report gives them, once each
    assert "Reused identical" in rerun
    for epoch in range(1, 6):
        assert len(re.findall(rf"Epoch +{epoch}: W = ", rerun)) == 1, shown


def test_a_stdout_of_its_own_gets_every_epoch_line(tmp_path, artifacts):
    out = trainflow("run", str(write_spec(tmp_path, GUIDE_SMALL)))
    assert out.returncode == 0, out.stderr[-2000:]
    printed = [line for line in out.stdout.splitlines() if line.startswith("Epoch")]
    assert [int(re.match(r"Epoch +(\d+)", line)[1]) for line in printed] == [0, 1, 2, 3, 4, 5]
