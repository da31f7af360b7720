"""Batch prediction: `tasks.scoring.score` on CSV files of 100,000 and 1,000,000 rows, each in a fresh process.

A small classification model (linear, 5 features: an integer and a float column, a text column, a
digit-looking text column and a true/false column) is trained with the project's own code on 4,000 rows and
laid out as a published version. Each input is then scored CSV -> CSV (default batch of 65,536 rows) in its
own subprocess, twice; each reports `Scored.seconds` and its peak RSS (`ru_maxrss`, read after scoring).
TensorFlow is imported before the clock starts; the model load is inside it. Two more sizes frame the
claim: 1,000 rows (the floor: Python, TensorFlow and the loaded model) and 3,000,000 rows (past the CSV
reader's read-ahead of up to 32 blocks of 1 MiB: a file smaller than that is read ahead whole).

This parent process stays small: training and writing the inputs happen in subprocesses too. Linux carries
the high-water mark of the process that spawns a child into the child's `ru_maxrss` (a vfork shares its
memory until exec), so a parent holding TensorFlow or a 3M-row table would show up as the child's peak. Each
child also reports VmHWM from /proc/self/status (its own memory's peak only) as a cross-check.

Claim: streaming keeps the peak flat, so it does not grow with the row count. Reported as measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import common  # noqa: F401  (sets up sys.path and env)
from common import table, write_section

TRAIN_ROWS = 4_000
LINEAR = {"kind": "linear"}
SIZES = (1_000, 100_000, 1_000_000, 3_000_000)
RUNS = 2  # fresh processes per size


def columns(rows: int, seed: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    plans = np.array(["basic", "pro", "max", "team"])
    zips = np.array(["02134", "10001", "94105", "60601", "other"])
    age = rng.integers(18, 80, rows)
    plan = plans[rng.integers(0, len(plans), rows)]
    charges = rng.normal(50, 20, rows).round(2)
    zip_code = zips[rng.integers(0, len(zips), rows)]
    promo = rng.random(rows) < 0.5
    logit = -0.05 * (age - 45) + np.where(plan == "basic", 1.5, -1.0) + np.where(zip_code == "02134", 1.0, 0.0) - promo
    churned = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return {"age": age, "plan": plan, "charges": charges, "zip": zip_code, "promo": promo, "churned": churned}


def write_csv(path: Path, rows: int, seed: int, with_id: bool = True) -> None:
    """Written with pyarrow: zip codes quoted as text, promo as true/false, as a user's export would have them."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    data = columns(rows, seed)
    pacsv.write_csv(pa.table({**({"id": np.arange(rows)} if with_id else {}), **data}), path)


def publish(folder: Path, model: Optional[dict] = LINEAR, epochs: int = 20) -> Path:
    """Train the model on TRAIN_ROWS rows and lay out its version folder as the publish step does (`model` None:
    the table default a least spec gets)."""
    from flows.spec.load import validate_data
    from tasks.checkpoint import save as checkpoints
    from tasks.data import load as data
    from tasks.model import models
    from tasks.train import trainers

    train_csv = folder / "train.csv"
    write_csv(train_csv, TRAIN_ROWS, 0, with_id=False)
    spec = validate_data({"name": "bench", "seed": 1, **({"model": model} if model else {}),
                          "data": {"kind": "csv", "path": str(train_csv), "target": "churned", "test_split": 0.2},
                          "training": {"epochs": epochs, "optimizer": {"kind": "adam", "learning_rate": 0.05}},
                          "checkpoint": {"formats": ["saved_model"]}})
    dataset = data.load(spec.data, 1)
    trained = trainers.fit(1, spec.model, spec.training, dataset, models.initial_state(spec.model, 1, dataset))
    version = folder / "bench" / "v0001"
    for name, content in checkpoints.files(1, spec.model, spec.checkpoint, trained).items():
        (version / "checkpoint" / name).parent.mkdir(parents=True, exist_ok=True)
        (version / "checkpoint" / name).write_bytes(content)
    (version / "schema.json").write_text(json.dumps(trained.schema.as_json()))
    (version / "classes.json").write_text(json.dumps(trained.schema.classes))
    return version


def score_once(version: str, source: str, output: str) -> None:
    """One scoring in this process; prints its rows, seconds and peaks as JSON."""
    import resource

    import pyarrow as pa
    import tensorflow  # noqa: F401  (imported before the clock: a fixed cost of the process, not of scoring)

    from tasks.scoring.stream import score

    result = score(Path(version), Path(source), Path(output))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    hwm_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                  if line.startswith("VmHWM:"))
    print(json.dumps({"rows": result.rows, "seconds": result.seconds, "peak_mb": peak_kb / 1024,
                      "hwm_mb": hwm_kb / 1024, "arrow_peak_mb": pa.default_memory_pool().max_memory() / 2**20,
                      "summary": result.summary}))


def run(*args: str) -> str:
    """This script in a fresh process (see the module doc: the parent stays small); its last line of output."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    return (done.stdout.strip().splitlines() or [""])[-1]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="trainflow-predict-") as tmp:
        folder = Path(tmp)
        version = run("publish", str(folder))
        rows_out = []
        peaks, seconds = {}, {}
        for size in SIZES:
            source, output = folder / f"input_{size}.csv", folder / f"scored_{size}.csv"
            run("write", str(source), str(size), str(size))
            runs = [json.loads(run("score", version, str(source), str(output))) for _ in range(RUNS)]
            for got in runs:
                assert got["rows"] == size and sum(got["summary"]["class_counts"].values()) == size, got
            peaks[size] = min(got["peak_mb"] for got in runs)
            seconds[size] = min(got["seconds"] for got in runs)
            label = f"{size:,}" + (" (the floor)" if size == SIZES[0] else "")
            rows_out.append([label, f"{source.stat().st_size / 1e6:.1f}", f"{output.stat().st_size / 1e6:.1f}",
                             f"{seconds[size]:.2f}", f"{size / seconds[size]:,.0f}",
                             " / ".join(f"{got['peak_mb']:.0f}" for got in runs),
                             " / ".join(f"{got['hwm_mb']:.0f}" for got in runs),
                             " / ".join(f"{got['arrow_peak_mb']:.0f}" for got in runs)])
            source.unlink()
            output.unlink()
    small, large, huge = SIZES[1], SIZES[2], SIZES[3]
    growth = peaks[large] - peaks[small]
    marginal = (large - small) / (seconds[large] - seconds[small])
    body = table(["rows scored (CSV -> CSV)", "input MB", "output MB", "seconds (best)", "rows/s",
                  "peak RSS MB, ru_maxrss", "VmHWM MB", "pyarrow's peak MB"], rows_out)
    body += (f"\n\nPeak RSS (ru_maxrss, lower of {RUNS} fresh processes) at {large:,} rows minus at {small:,} rows: "
             f"**{growth:+.0f} MB** ({growth / peaks[small] * 100:+.1f}%) for 10x the rows; {huge:,} rows minus "
             f"{large:,}: **{peaks[huge] - peaks[large]:+.0f} MB**. pyarrow's CSV reader reads ahead up to 32 blocks "
             f"of 1 MiB: the {small:,}-row file (a few MB) fits whole, larger files fill the cap, so pyarrow's peak "
             f"rises until the file passes ~32 MB and then stays. The {SIZES[0]:,}-row run is the floor: Python, "
             f"TensorFlow and the loaded SavedModel. Marginal throughput from {small:,} to {large:,} rows: "
             f"{marginal:,.0f} rows/s. Default batch of 65,536 rows; seconds are `Scored.seconds` (input checks, "
             f"model load, reading, scoring, writing; TensorFlow already imported). Each pair of figures: the "
             f"{RUNS} processes.")
    write_section("Batch prediction", body)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "publish":
        print(publish(Path(sys.argv[2])))
    elif command == "write":
        write_csv(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif command == "score":
        score_once(*sys.argv[2:5])
    else:
        main()
