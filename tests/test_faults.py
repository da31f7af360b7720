"""Faults lose nothing and every message tells the truth (issue 21): each finding of the fault campaign, with
real processes killed at chosen points (`tasks.common.faults`), real kernel locks, a real full file system,
real PID namespaces where `unshare` works, and real Prefect servers killed and hung."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tasks.common.files import owned_temp, sweep_stale, write_atomic
from tasks.lifecycle.aliases import Aliases
from tasks.publish.store import Store, StoreError
from tests.conftest import BIN, ROOT, trainflow, write_spec

PYTHON = str(BIN / "python")


def _env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _python(code: str, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-c", code, *args], env=_env(**env), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended before {path.name}: {proc.stderr.read()[-2000:]}")
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _publish_trivial(root: Path, name: str = "s", fingerprint: str | None = None, text: str = "x") -> None:
    def build(folder: Path, label: str) -> dict:
        (folder / "a.txt").write_text(text)
        return {"promised": ["a.txt"]}

    Store(root).publish(name, fingerprint, build)


# --------------------------------------------------------------------------- 1. staging a builder owns

BUILDER = """
import sys
from pathlib import Path
from tasks.publish.store import Store

def build(folder, label):
    for i in range(3):
        (folder / f"f{i}.txt").write_text(str(i))
    (folder / "plots").mkdir()
    (folder / "plots" / "p.png").write_bytes(b"png")
    return {"promised": ["f0.txt", "f1.txt", "f2.txt", "plots/p.png"]}

print(Store(Path(sys.argv[1])).publish("series", None, build).version.label, flush=True)
"""


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_a_builder_in_another_pid_namespace_keeps_its_staging_folder_and_publishes_every_file(tmp_path):
    """The builder pauses with its staging folder half-built; meanwhile another process (in the root PID
    namespace, where the builder's pid means nothing) publishes into the same store, which cleans staging.
    Without `unshare` the two are simply separate processes holding separate locks."""
    root = tmp_path / "root"
    command = [PYTHON, "-c", BUILDER, str(root)]
    if _unshare_works():
        command = ["unshare", "--pid", "--fork", "--kill-child"] + command
    # own process: a builder in another PID namespace, paused at a fault point
    builder = subprocess.Popen(command, env=_env(TRAINFLOW_FAULT="publish-built:pause", TRAINFLOW_FAULT_DIR=str(tmp_path)),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marker = tmp_path / "publish-built"
    _wait_for(marker, builder)
    staged = [p for p in (root / ".staging").iterdir() if p.is_dir()]
    assert len(staged) == 1
    assert Store(root).clean_stale_staging() == [], "a live builder's folder is not stale, whatever its pid"
    _publish_trivial(root, "other")  # a whole publish, which cleans staging first
    assert staged[0].is_dir()
    marker.unlink()
    out, err = builder.communicate(timeout=60)
    assert builder.returncode == 0, err[-2000:]
    version = Store(root).versions("series")[0]
    assert sorted(version.manifest()["files"]) == ["f0.txt", "f1.txt", "f2.txt", "plots/p.png"]
    assert Store(root).verify(version) == []


def test_a_dead_builders_staging_folder_is_removed_by_the_next_publish(tmp_path):
    root = tmp_path / "root"
    # own process: a builder SIGKILLed after building
    builder = subprocess.Popen([PYTHON, "-c", BUILDER, str(root)], env=_env(TRAINFLOW_FAULT="publish-built:kill"),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    builder.communicate(timeout=60)
    assert builder.returncode == -signal.SIGKILL
    assert any((root / ".staging").iterdir()), "the killed builder left its folder"
    _publish_trivial(root, "other")
    assert list((root / ".staging").iterdir()) == [], "its lock was free: folder and lock file removed"
    assert Store(root).versions("series") == []


def test_a_publish_refuses_a_manifest_that_lacks_a_promised_file(tmp_path):
    def build(folder: Path, label: str) -> dict:
        (folder / "kept.txt").write_text("1")
        return {"promised": ["kept.txt", "checkpoint/saved_model/saved_model.pb"]}

    with pytest.raises(StoreError, match=r"refusing to publish s@v0001: 1 file\(s\).*saved_model.pb"):
        Store(tmp_path).publish("s", None, build)
    assert Store(tmp_path).versions("s") == []


def test_verify_reports_a_promised_file_the_manifest_does_not_record(tmp_path):
    _publish_trivial(tmp_path)
    version = Store(tmp_path).versions("s")[0]
    manifest = version.manifest()
    manifest["promised"].append("checkpoint/saved_model/saved_model.pb")
    (version.path / "manifest.json").write_text(json.dumps(manifest))
    assert Store(tmp_path).verify(version) == [
        "checkpoint/saved_model/saved_model.pb: promised by its run but not in the manifest"]


# --------------------------------------------------------------------------- 3. crash-safe small files and snapshots

def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _limit_file_size(limit: int):
    """The fallback for a full disk where tmpfs cannot be mounted: writes past `limit` bytes fail (EFBIG)."""
    def apply():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


FULL_DISK_WRITER = """
import json, sys
from pathlib import Path
from tasks.common.files import write_atomic
from tasks.lifecycle.aliases import Aliases
from tasks.publish.store import Store
root = Path(sys.argv[1])
try:
    write_atomic(root / "small.json", b"x" * 10_000_000)
except OSError as exc:
    print("write_atomic:", exc.strerror, flush=True)
try:
    Aliases(Store(root), "s").set("prod", "v1", reason="x" * 10_000_000)
except OSError as exc:
    print("alias:", exc.strerror, flush=True)
"""


def test_a_full_disk_leaves_the_old_file_and_no_temporary_files(tmp_path):
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, "2m")
    try:
        _publish_trivial(disk)
        write_atomic(disk / "small.json", b"old")
        # own process: writes that meet a full disk (a tmpfs, or a file-size limit on the process)
        proc = subprocess.run([PYTHON, "-c", FULL_DISK_WRITER, str(disk)], env=_env(), cwd=ROOT, capture_output=True,
                              text=True, timeout=120, preexec_fn=None if mounted else _limit_file_size(1_000_000))
        assert "write_atomic:" in proc.stdout and "alias:" in proc.stdout, proc.stderr[-2000:]
        assert (disk / "small.json").read_bytes() == b"old"
        leftovers = [p.name for p in disk.rglob(".*") if p.name.endswith((".tmp", ".partial"))]
        assert leftovers == []
        assert Aliases(Store(disk), "s").holders() == {} or Aliases(Store(disk), "s").holders() == {"prod": "v0001"}
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], capture_output=True)


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from tasks.common.files import owned_temp
with owned_temp(Path(sys.argv[1]) / "aliases.json") as (tmp, handle):
    handle.write(b"half")
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_temporary_files_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    # own process: a writer SIGKILLed mid-write
    proc = subprocess.run([PYTHON, "-c", KILLED_WRITER, str(tmp_path)], env=_env(), cwd=ROOT, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    dead = list(tmp_path.glob(".aliases.json.*.tmp"))
    assert len(dead) == 1
    with owned_temp(tmp_path / "other.json") as (live, handle):
        handle.write(b"being written")
        assert sweep_stale(tmp_path) == dead
        assert live.exists() and not dead[0].exists()


def test_an_empty_or_truncated_snapshot_is_a_logged_miss_and_cleared(tmp_path):
    from tasks.train.resume import ResumePoint, Snapshot

    point = ResumePoint(tmp_path / "resume")
    columns = {"epoch": np.arange(1, 11), "loss": np.linspace(1, 0, 10)}
    point.save(Snapshot(10, [np.ones(2)], [], columns))
    assert ResumePoint(tmp_path / "resume").load().epoch == 10
    for damage in (b"", (tmp_path / "resume" / "state.npz").read_bytes()[:50]):
        point.save(Snapshot(10, [np.ones(2)], [], columns))
        (tmp_path / "resume" / "state.npz").write_bytes(damage)
        said = []
        assert ResumePoint(tmp_path / "resume").load(said.append) is None
        assert len(said) == 1 and "cannot be read" in said[0] and "starts from epoch 0" in said[0]
        assert not (tmp_path / "resume").exists(), "cleared: the next run saves afresh"


def test_snapshots_append_only_the_rows_since_the_last_one(tmp_path):
    from tasks.train.resume import ResumePoint, Snapshot

    point = ResumePoint(tmp_path / "r")
    for end in range(1000, 5001, 1000):
        rows = {"epoch": np.arange(end - 999, end + 1), "loss": np.full(1000, end, float)}
        point.save(Snapshot(end, [np.zeros(3)], [], rows, start=end - 1000))
    sizes = [(tmp_path / "r" / f"h{end}.npz").stat().st_size for end in range(1000, 5001, 1000)]
    assert max(sizes) == min(sizes), "each save writes its own 1,000 rows, not the whole history"
    loaded = ResumePoint(tmp_path / "r").load()
    assert loaded.epoch == 5000 and np.array_equal(loaded.columns["epoch"], np.arange(1, 5001))


# --------------------------------------------------------------------------- 9. alias history and move in one step

ALIAS_MOVER = """
import sys
from pathlib import Path
from tasks.lifecycle.aliases import Aliases
from tasks.publish.store import Store
Aliases(Store(Path(sys.argv[1])), "s").set("prod", sys.argv[2])
"""


def test_a_kill_between_the_history_line_and_the_alias_file_keeps_the_move_and_its_record(tmp_path):
    for text in ("1", "2"):
        _publish_trivial(tmp_path, text=text)
    Aliases(Store(tmp_path), "s").set("prod", "v1")
    # own process: an alias mover SIGKILLed after its journal entry
    proc = subprocess.run([PYTHON, "-c", ALIAS_MOVER, str(tmp_path), "v2"], env=_env(TRAINFLOW_FAULT="alias-journaled:kill"),
                          cwd=ROOT, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((tmp_path / "s" / "aliases.json").read_text()) == {"prod": "v0001"}, "killed before the file"
    aliases = Aliases(Store(tmp_path), "s")
    assert aliases.holders() == {"prod": "v0002"}, "the journal holds"
    assert [e["to"] for e in aliases.history("prod")] == ["v0001", "v0002"]
    assert aliases.problems() and "interrupted move" in aliases.problems()[0]
    assert aliases.rollback("prod")["to"] == "v0001"
    assert aliases.holders() == {"prod": "v0001"} and aliases.problems() == []


def test_a_torn_history_line_spoils_only_itself(tmp_path):
    for text in ("1", "2"):
        _publish_trivial(tmp_path, text=text)
    aliases = Aliases(Store(tmp_path), "s")
    aliases.set("prod", "v1")
    with (tmp_path / "s" / "alias-history.jsonl").open("a") as handle:
        handle.write('{"alias": "prod", "decision": "mov')  # a writer killed mid-line
    aliases.set("prod", "v2")
    assert aliases.holders() == {"prod": "v0002"} and [e["to"] for e in aliases.history("prod")] == ["v0001", "v0002"]


# --------------------------------------------------------------------------- 11. messages

def test_a_cell_of_megabytes_is_named_as_such_not_as_an_unclosed_quote(tmp_path):
    from tasks.common.errors import DataError
    from tasks.data.tables import read_table

    path = tmp_path / "big.csv"
    path.write_text("a,b\n" + "".join(f"{i},t\n" for i in range(20)) + f"1,{'x' * 3_500_000}\n" + "2,t\n")
    with pytest.raises(DataError) as caught:
        read_table(path, "csv")
    message = str(caught.value)
    assert message.startswith("big.csv:22: a row of 3,500,002 bytes, too long for the CSV reader") and "quote" not in message


def test_an_empty_numeric_target_is_named_empty_not_one_class(tmp_path):
    (tmp_path / "t.csv").write_text("a,y\n" + "".join(f"{i},\n" for i in range(30)))
    spec = write_spec(tmp_path, "name: t\nseed: 1\ndata: {kind: csv, path: t.csv, target: y}\nmodel: {kind: linear}\n")
    out = trainflow("validate", str(spec))
    assert out.returncode == 2 and "data.target: column 'y' is empty in 30 row(s)" in out.stderr
    assert "class" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_damaged_saved_models_reason_is_its_whole_first_line():
    from tasks.scoring.model import load_reason

    folder = Path("/srv/v0001/checkpoint/saved_model")
    reason = load_reason(ValueError(f"Error parsing message with type 'tensorflow.SavedModel' in {folder}: "
                                    "unexpected end of input\nmore detail"), folder)
    assert reason == "Error parsing message with type 'tensorflow.SavedModel' in <saved_model>: unexpected end of input"
