"""Images are streamed from the decoded cache (issue 29's "Streamed, not loaded"), and a streamed run is the run it
would be with the pixels in memory.

- Both trainers, on the default image stack (augmentation and Dropout included) with shuffled minibatches, give the
  same history, the same test predictions and the same weights from a streamed split as from the same split read
  whole into memory: to the bit.
- What training reads from the cache at once is a minibatch or the evaluation sample, never the split: every read
  during a training run is counted here, with the evaluation sample bounded small.

Called as tasks (no Prefect): what is compared is the trainers' input path, not the orchestration.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.test_images import draw_folder

BATCH = 16


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """(spec, dataset) of 60 drawn pictures per class, through the data task (decoded into the cache)."""
    from flows.spec.load import load_spec
    from tasks.data.load import load_images

    folder = tmp_path_factory.mktemp("stream")
    draw_folder(folder / "shapes", per_class=60, size=16)
    (folder / "spec.yaml").write_text(f"name: streamed\ndata: {{kind: images, path: shapes}}\n"
                                      f"training: {{epochs: 3, batch_size: {BATCH}}}\n")
    spec = load_spec(folder / "spec.yaml")
    saved = os.environ.get("TRAINFLOW_ARTIFACTS")
    os.environ["TRAINFLOW_ARTIFACTS"] = str(folder / "artifacts")
    try:
        dataset = load_images(spec.data, spec.seed)
    finally:
        if saved is None:
            os.environ.pop("TRAINFLOW_ARTIFACTS", None)
        else:
            os.environ["TRAINFLOW_ARTIFACTS"] = saved
    return spec, dataset


def _train(spec, dataset, trainer: str, in_memory: bool):
    """The train task's table path (`fit_table`'s steps) with the split streamed or read whole first."""
    from tasks.model import models, tabular
    from tasks.results import TrainData
    from tasks.train.manual import train
    from tasks.train.table_fit import encode, objective_of, predicted_on

    training = spec.training.model_copy(update={"trainer": trainer})
    encoded = encode(spec.model, spec.seed, dataset)
    data, test = encoded.data, encoded.test
    if in_memory:
        data = TrainData(np.asarray(data.x), data.y, np.asarray(data.x_val), data.y_val)
        test = np.asarray(test)
    _, _, core = tabular.build(spec.model, spec.seed, dataset.schema)
    result = train(tabular.trained_core(core), data, training, spec.seed, None, objective_of(dataset.schema))
    return result, predicted_on(core, test), models.get_weights(core)


@pytest.mark.parametrize("trainer", ["manual", "keras"])
def test_a_streamed_split_trains_exactly_as_the_same_split_in_memory(images, trainer):
    from tasks.train.inputs import streamed
    from tasks.train.table_fit import encode

    spec, dataset = images
    assert streamed(encode(spec.model, spec.seed, dataset).data.x), "an images split reaches the trainer on disk"
    on_disk, disk_test, disk_weights = _train(spec, dataset, trainer, in_memory=False)
    whole, whole_test, whole_weights = _train(spec, dataset, trainer, in_memory=True)
    assert on_disk.epochs == whole.epochs == 3
    assert on_disk.columns["loss"][-1] < on_disk.initial["loss"], "it trained"
    for name, values in whole.columns.items():
        np.testing.assert_array_equal(on_disk.columns[name], values, err_msg=name)
    np.testing.assert_array_equal(disk_test, whole_test)
    for kept, expected in zip(disk_weights, whole_weights):
        np.testing.assert_array_equal(kept, expected)


@pytest.mark.parametrize("trainer", ["manual", "keras"])
def test_training_reads_a_minibatch_or_the_evaluation_sample_at_a_time_never_the_split(images, trainer, monkeypatch):
    from tasks.data import pixels
    from tasks.model import tabular
    from tasks.train import inputs
    from tasks.train.manual import train
    from tasks.train.table_fit import encode, objective_of, predicted_on

    spec, dataset = images
    sample = 20  # rows of the per-epoch evaluation sample: EVAL_BYTES made small for this test
    monkeypatch.setattr(inputs, "EVAL_BYTES", sample * int(np.prod(dataset.schema.features[0].shape)))
    monkeypatch.setattr(tabular, "ENCODE_BATCH", 8)  # the test predictions too, in chunks smaller than a split
    reads, read = [], pixels.rows

    def counted(source, index):
        reads.append(len(index))
        return read(source, index)

    monkeypatch.setattr(pixels, "rows", counted)
    encoded = encode(spec.model, spec.seed, dataset)
    _, _, core = tabular.build(spec.model, spec.seed, dataset.schema)
    training = spec.training.model_copy(update={"trainer": trainer})
    result = train(tabular.trained_core(core), encoded.data, training, spec.seed, None, objective_of(dataset.schema))
    train_rows, val_rows = len(dataset.train), len(encoded.data.x_val)
    assert result.epochs == 3
    assert min(train_rows, val_rows) > max(BATCH, sample), "each split is larger than what is read at once"
    assert reads.count(BATCH) >= 3 * (train_rows // BATCH), "each epoch's minibatches were read as they came"
    assert reads.count(sample) == 2, "one seeded evaluation sample of each split, read once"
    assert max(reads) <= max(BATCH, sample), f"a read of {max(reads)} rows during training"
    during_training = len(reads)
    predicted = predicted_on(core, encoded.test)
    assert len(predicted) == len(dataset.test) and max(reads[during_training:]) <= 8, "predicted a chunk at a time"


def test_a_decoded_cache_gone_from_the_artifact_root_says_how_to_make_it_again(tmp_path):
    from tasks.common.errors import DataError
    from tasks.data.pixels import Rows, rows

    gone = str(tmp_path / "0123abcd.npy")
    for reader in (lambda: Rows(gone, np.arange(3)), lambda: rows(gone, np.arange(3))):
        with pytest.raises(DataError, match=r"0123abcd\.npy are gone from the artifact root's cache; run again with "
                                             r"--refresh"):
            reader()
