"""What a user sees: one epoch numbering, readable logs, plots that show everything, and commands that never
crash on real versions."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from flows.api import run_spec
from tests.conftest import GUIDE_SMALL, ROOT, SPECS, trainflow, trainflow_process, write_spec

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]  # whole runs that train: `make test` runs them, `make test-fast` skips them

SWEEP = GUIDE_SMALL + "sweep:\n  grid: {training.optimizer.learning_rate: [0.05, 0.2], model.init.w: [5.0, 1.0]}\n"


def test_one_epoch_numbering_from_console_to_tensorboard(artifacts):
    """The guide's last epoch carries the same number and loss on the console, in history.csv, in the loss
    plot's data and in TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = trainflow("run", str(SPECS / "guide.yaml"))
    assert out.returncode == 0, out.stderr[-3000:]
    console = [line for line in out.stdout.splitlines() if line.startswith("Epoch")]
    epoch, loss = re.match(r"Epoch +(\d+): .*loss=([\d.]+)", console[-1]).groups()
    assert console[0].startswith("Epoch  0:") and int(epoch) == 10
    version = artifacts / "guide" / "v0001"
    with (version / "history.csv").open() as handle:
        last = list(csv.DictReader(handle))[-1]
    assert int(last["epoch"]) == 10 and f"{float(last['loss']):.5f}" == loss
    plot = json.loads((version / "plots" / "loss.json").read_text())
    train_curve = next(s for s in plot["panels"][0]["series"] if s["role"] == "train")
    assert train_curve["x"][0] == 0 and train_curve["x"][-1] == 10 and f"{train_curve['y'][-1]:.5f}" == loss
    events = EventAccumulator(str(version / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    import tensorflow as tf

    final = events.Tensors("loss")[-1]
    assert final.step == 10 and f"{float(tf.make_ndarray(final.tensor_proto)):.5f}" == loss
    assert "Epoch 10: W = 3.12, b = 1.82, loss=1.02268" in out.stderr, "the run log numbers epochs the same way"


def test_a_long_run_logs_about_fifty_lines_and_a_diverging_run_logs_what_led_to_it(tmp_path, artifacts):
    spec = write_spec(tmp_path, GUIDE_SMALL.replace("epochs: 5", "epochs: 5000"))
    out = trainflow("run", str(spec), "--set", "training.optimizer.learning_rate=0.001")
    assert out.returncode == 0, out.stderr[-3000:]
    logged = [line for line in out.stderr.splitlines() if re.search(r"Task run 'train-\w+' - Epoch +\d+:", line)]
    assert 45 <= len(logged) <= 60
    assert "Epoch  1:" in logged[0] and "Epoch 5000:" in logged[-1]
    printed = [line for line in out.stdout.splitlines() if line.startswith("Epoch")]
    assert len(printed) <= 61 and printed[-1].startswith("Epoch 5000:")

    diverging = trainflow("run", str(spec), "--set", "training.optimizer.learning_rate=0.9")
    assert diverging.returncode == 1
    failed_at = int(re.search(r"diverged at epoch (\d+)", diverging.stderr).group(1))
    epochs = [int(n) for n in re.findall(r"Task run 'train-\w+' - Epoch +(\d+):", diverging.stderr)]
    assert failed_at > 10 and failed_at - 1 in epochs and failed_at in epochs, "the epochs before it are logged"


def test_commands_on_real_experiment_and_sweep_versions_never_crash(tmp_path, artifacts):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    run_spec(spec)
    run_spec(spec, overrides=["training.epochs=7"])
    sweep = write_spec(tmp_path, SWEEP.replace("name: small", "name: swept"), "sweep.yaml")
    run_spec(sweep)
    run_spec(sweep, overrides=["sweep.fuse=false"])
    commands = [["list"], ["list", "small"], ["list", "swept"], ["show", "small"], ["show", "small@v1"],
                ["show", "swept@v1"], ["show", "swept@v2"], ["diff", "small@v2"], ["diff", "small@v1", "small@v2"],
                ["diff", "swept@v2"], ["verify"], ["verify", "swept"], ["verify", "small@v1"], ["verify", "swept@latest"],
                ["plan", str(spec)], ["plan", str(sweep)]]
    for command in commands:
        out = trainflow(*command)
        assert out.returncode == 0 and "Traceback" not in out.stderr, (command, out.stderr[-2000:])
    listed = trainflow("list").stdout
    assert "swept@v0001" in listed and "sweep of 4 trials" in listed and "swept-t" not in listed
    shown = trainflow("show", "swept@v1").stdout
    assert "trials (fused path" in shown and shown.count("\n  ") >= 4
    assert "small@v0001 → small@v0002" in trainflow("diff", "small@v2").stdout
    assert "training.epochs (5 → 7)" in trainflow("diff", "small@v2").stdout
    unknown = trainflow("verify", "smal")
    assert unknown.returncode == 2 and "did you mean 'small'" in unknown.stderr and "known: small, swept" in unknown.stderr
    assert trainflow("show", "small@v9").returncode == 2
    assert "verified 1 version(s): 1 intact" in trainflow("verify", "small@v2").stdout
    missing = trainflow("verify", "small@nope")
    assert missing.returncode == 2 and "neither a version nor an alias of small; versions: v0001, v0002" in missing.stderr
    metric = write_spec(tmp_path, SWEEP.replace("name: small", "name: swept").replace("sweep:", "sweep:\n  metric: los"),
                        "metric.yaml")
    bad = trainflow("validate", str(metric))
    assert bad.returncode == 2 and "sweep.metric: this spec's trials have no metric 'los' (did you mean 'loss'?)" in bad.stderr


def test_browsing_picks_and_sorts_metrics_marks_better_and_worse_and_names_a_sweeps_best_trial(tmp_path, artifacts):
    spec = write_spec(tmp_path, GUIDE_SMALL)
    losses = {run_spec(spec, overrides=[f"training.epochs={n}"])["version"]: n for n in (5, 9, 2)}
    sweep = run_spec(write_spec(tmp_path, SWEEP.replace("name: small", "name: swept"), "sweep.yaml"))
    listed = trainflow("list", "swept").stdout
    best = sweep["best"]
    assert f"sweep of 4 trials, best trial {best['id']} (" in listed and f"training.optimizer.learning_rate=" \
        f"{best['values']['training.optimizer.learning_rate']}" in listed
    assert listed.split("): ", 1)[1].startswith("loss="), "the sweep's metric first"
    assert json.loads(trainflow("list", "swept", "--json").stdout)[0]["best_trial"]["id"] == best["id"]

    better, worse = trainflow("diff", "small@v1", "small@v2").stdout, trainflow("diff", "small@v2", "small@v3").stdout
    assert re.search(r"  loss .* \(-[\d.e-]+, better\)", better) and re.search(r"  loss .* \(\+[\d.e-]+, worse\)", worse)
    assert "w " in better and re.search(r"  w .*\(\S+\)\n", better), "w has no direction: no mark"
    marks = json.loads(trainflow("diff", "small@v1", "small@v2", "--json").stdout)["metrics"]
    assert marks["loss"]["change"] == "better" and marks["epochs"]["change"] is None

    table = trainflow("compare", "small", "--metrics", "loss,w", "--sort", "loss", env={"COLUMNS": "200"}).stdout
    lines = table.splitlines()
    assert lines[0].split() == ["version", "aliases", "created", "epochs", "loss", "w"]
    assert [line.split()[0] for line in lines[1:4]] == ["v0002", "v0001", "v0003"], "best (lowest) loss first"
    narrow = trainflow("compare", "small", env={"COLUMNS": "50"}).stdout.splitlines()
    assert all(len(line) <= 50 for line in narrow if not line.startswith(("not shown", "settings"))), narrow
    assert narrow[-1].startswith("not shown: ") and "--metrics" in narrow[-1]
    by_json = json.loads(trainflow("compare", "small", "--json", "--metrics", "loss").stdout)
    assert [set(r) for r in by_json["rows"]][0] == {"version", "aliases", "created", "training.epochs", "loss"}
    typo = trainflow("compare", "small", "--metrics", "los")
    assert typo.returncode == 2 and "--metrics: no column 'los' (did you mean 'loss'?)" in typo.stderr
    assert "per spec" not in trainflow("compare", "--help").stdout
    assert losses == {"v0001": 5, "v0002": 9, "v0003": 2}
    import subprocess
    import sys

    from tests.test_run import LIGHT_CHECK

    for args in (["compare", "small", "--sort", "loss"], ["diff", "small@v2"], ["list", "swept"]):
        # own process: which modules a light command imports needs a process that imported nothing yet
        out = subprocess.run([sys.executable, "-c", LIGHT_CHECK.format(args=args)], capture_output=True, text=True,
                             cwd=ROOT)
        assert "HEAVY []" in out.stderr, (args, out.stderr[-2000:])


def test_validate_reads_the_header_and_takes_folders(tmp_path):
    (tmp_path / "food.csv").write_text("income,foodexp\n1,2\n2,3\n")
    bad = write_spec(tmp_path, "name: food\ndata: {kind: csv, path: food.csv, x_column: incme, y_column: foodexp}\n"
                               "model: {kind: linear}\n", "food.yaml")
    out = trainflow("validate", str(bad))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert f"{bad}:2:35: data.x_column: 'incme' is not a column of food.csv (did you mean 'income'?); " \
           "it has: income, foodexp" in out.stderr
    folder = trainflow("validate", str(SPECS))
    assert folder.returncode == 0 and folder.stdout.count(": ok (") == len(list(SPECS.glob("*.yaml")))


def test_a_sweep_over_a_list_valued_field_runs(tmp_path, artifacts):
    text = ("name: widths\nseed: 1\ndata: {kind: sine, num_examples: 64}\nmodel: {kind: mlp}\n"
            "training: {epochs: 3}\nplots: {include: [loss]}\ncheckpoint: {formats: [tf_checkpoint]}\n"
            "sweep: {grid: {model.hidden: [[4], [8, 8]]}}\n")
    result = run_spec(write_spec(tmp_path, text))
    assert sorted(t["values"]["model.hidden"] for t in result["trials"]) == [[4], [8, 8]]
    assert (Path(result["path"]) / "plots" / "loss_by_model_hidden.png").is_file(), "text values get a plot too"


#: The figures the README shows (docs/images/<spec>-<figure>.png).
README_FIGURES = {"guide-predictions", "guide-weights", "sine-mlp-predictions", "sine-mlp-loss", "guide-sweep-curves",
                  "guide-sweep-loss_by_training_optimizer_learning_rate"}


def _text_inside(fig) -> list[str]:
    """What of a matplotlib figure reaches outside its canvas (clipped in the PNG): each axes' drawn extent
    (tick labels, axis labels, title, legend) and the figure's title."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    boxes = [(f"axes {i}", ax.get_tightbbox(renderer)) for i, ax in enumerate(fig.axes)]
    if fig._suptitle is not None:
        boxes.append(("title", fig._suptitle.get_window_extent(renderer)))
    return [name for name, box in boxes if box.x0 < canvas.x0 - 0.5 or box.y0 < canvas.y0 - 0.5
            or box.x1 > canvas.x1 + 0.5 or box.y1 > canvas.y1 + 0.5]


def test_every_figure_has_a_title_named_axes_and_no_clipped_text(tmp_path, artifacts):
    """The guide's, the sine MLP's and a sweep's figures, rendered from the data their versions keep; with
    TRAINFLOW_UPDATE_SCREENSHOTS set they are also written to docs/images/ for the README."""
    import os

    from tasks.plots import render
    from tasks.plots.figures import Figure, Panel, Series

    guide = run_spec(SPECS / "guide.yaml")
    sine = run_spec(SPECS / "sine-mlp.yaml", overrides=["training.epochs=60"])
    sweep = run_spec(SPECS / "guide-sweep.yaml")
    update = os.environ.get("TRAINFLOW_UPDATE_SCREENSHOTS")
    for result in (guide, sine, sweep):
        for data in sorted((Path(result["path"]) / "plots").glob("*.json")):
            spec = json.loads(data.read_text())
            figure = Figure(spec["name"], spec["title"], [Panel(**{**p, "series": [Series(**s) for s in p["series"]]})
                                                          for p in spec["panels"]], spec["width"], spec["height"])
            heading = f"{result['name']} {result['version']}"
            fig = render.build(figure, heading)
            assert fig._suptitle.get_text().startswith(heading)
            for ax in fig.axes:
                assert ax.get_xlabel() and ax.get_ylabel(), (data, "unnamed axis")
            assert _text_inside(fig) == [], (data, _text_inside(fig))
            render.pyplot().close(fig)
            if update and f"{result['name']}-{data.stem}" in README_FIGURES:
                target = ROOT / "docs" / "images" / f"{result['name']}-{data.stem}.png"
                target.write_bytes((data.with_suffix(".png")).read_bytes())


def test_the_loss_plot_marks_the_best_and_the_stopped_epoch(tmp_path, artifacts):
    from tests.test_table_runs import _table

    _table(tmp_path)
    spec = write_spec(tmp_path, "name: stops\nseed: 1\ndata: {kind: csv, path: customers.csv, target: churned, "
                                "validation_split: 0.3}\nmodel: {kind: mlp, hidden: [32]}\ntraining: {trainer: keras, "
                                "optimizer: {kind: adam, learning_rate: 0.1}, epochs: 200, batch_size: 16, "
                                "early_stopping: {monitor: val_loss, patience: 3}}\nplots: {include: [loss]}\n")
    result = run_spec(spec)
    metrics = result["metrics"]
    assert metrics["stopped_epoch"] < 200, "early stopping ended it"
    plot = json.loads((Path(result["path"]) / "plots" / "loss.json").read_text())
    marks = {s["role"]: s for s in plot["panels"][0]["series"] if s["role"] in ("best_epoch", "stopped_epoch")}
    assert marks["best_epoch"]["x"] == [metrics["best_epoch"]] * 2
    assert marks["best_epoch"]["label"] == f"best epoch {metrics['best_epoch']}"
    assert marks["stopped_epoch"]["x"] == [metrics["stopped_epoch"]] * 2


def test_a_log_loss_axis_is_labelled_at_1_2_and_5_of_each_decade_and_a_narrow_range_stays_linear():
    from tasks.plots import render
    from tasks.plots.figures import Figure, Panel, Series, positive

    falling = Series("training loss", "train", list(range(11)), [10.3, 6.3, 4.1, 2.8, 2.0, 1.6, 1.3, 1.1, 1.0, 0.95, 0.9])
    assert positive(falling) and not positive(Series("loss", "train", [0, 1], [0.7, 0.4]))
    fig = render.build(Figure("loss", "loss", [Panel("", "epoch", "loss", [falling], log_y=True)]), "demo v0001")
    ax = fig.axes[0]
    fig.canvas.draw()
    low, high = ax.get_ylim()
    labels = [t.get_text() for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high and t.get_text()]
    assert labels == ["1", "2", "5", "10"], labels


@pytest.mark.slow  # starts a process that imports TensorFlow
def test_tensorflows_start_up_lines_are_kept_with_debug(tmp_path, artifacts):
    """TensorFlow's native libraries print absl's start-up notices (no CUDA drivers, …) while it is imported,
    before TF_CPP_MIN_LOG_LEVEL applies; on this CPU machine, twice per run. Without --debug they are dropped:
    tests/test_run.py checks that on its own process's stderr, which needs no second run here."""
    from flows.process.startup import START_UP_LINE

    spec = write_spec(tmp_path, GUIDE_SMALL)
    # own process: TensorFlow prints these lines while a process imports it
    loud = trainflow_process("run", str(spec), "--no-cache", "--debug")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert [line for line in loud.stderr.splitlines() if START_UP_LINE.match(line)], "--debug keeps them"
    assert "Epoch  5: W = " in loud.stderr, "the run's own log still reaches stderr"
