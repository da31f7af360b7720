"""Save a trained model in the formats people load with plain TensorFlow or Keras.

- `tf_checkpoint`: `tf.train.Checkpoint(model=...)`, read back with `tf.train.load_checkpoint` or restored
  into a fresh model.
- `keras_weights`: `save_weights("model.weights.h5")`; Keras 3 refuses any other file name.
- `keras`: a whole `.keras` file; the classes are registered and carry a real `get_config`.
- `saved_model`: a SavedModel whose `serving_default` signature maps `x` (float32, shape [N]) to
  predictions, loadable without trainflow's classes.

Files are written to a scratch folder and returned as `{relative path: bytes}`, which is what the
checkpoint task caches and the publish step copies into the version folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from tasks.checkpoint.spec import CHECKPOINT_FORMATS, CheckpointSpec
from tasks.model import models
from tasks.model.spec import KERAS_MODELS, ModelSpec
from tasks.results import Trained

SERVING_SIGNATURE = tf.TensorSpec([None], tf.float32, name="x")


def write(model: models.Model, formats: list[str], folder: Path) -> list[Path]:
    """Write each format under `folder`; returns the paths written (partial files may remain on failure)."""
    folder.mkdir(parents=True, exist_ok=True)
    remember_keras_skipsets()
    written = []
    for fmt in formats:
        if fmt == "tf_checkpoint":
            written.append(Path(tf.train.Checkpoint(model=model).write(str(folder / "tf_checkpoint" / "ckpt"))))
        elif fmt == "keras_weights":
            model.save_weights(folder / "model.weights.h5")
            written.append(folder / "model.weights.h5")
        elif fmt == "keras":
            model.save(folder / "model.keras")
            written.append(folder / "model.keras")
        elif fmt == "saved_model":
            _save_serving(model, folder / "saved_model")
            written.append(folder / "saved_model")
        else:
            raise ValueError(f"unknown checkpoint format {fmt!r}")
    return written


def _save_serving(model: models.Model, path: Path) -> None:
    if isinstance(model, keras.Model):
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name="serving_default", fn=lambda x: {"y": model(x)}, input_signature=[SERVING_SIGNATURE])
        archive.write_out(str(path), verbose=False)
        return
    serve = tf.function(lambda x: {"y": model(x)}, input_signature=[SERVING_SIGNATURE])
    model.serve = serve
    tf.saved_model.save(model, str(path), signatures={"serving_default": serve})


def as_files(model: models.Model, formats: list[str]) -> dict[str, bytes]:
    """Every file of every format, keyed by its path relative to the checkpoint folder."""
    with tempfile.TemporaryDirectory(prefix="trainflow-ckpt-") as tmp:
        root = Path(tmp)
        write(model, formats, root)
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def formats_for(model: ModelSpec, checkpoint: CheckpointSpec, table: bool = False) -> list[str]:
    """The formats to write: the ones asked for, or every one the model supports (every one, for a table)."""
    if checkpoint.formats is not None:
        return list(checkpoint.formats)
    if table or model.kind in KERAS_MODELS:
        return list(CHECKPOINT_FORMATS)
    return ["tf_checkpoint", "saved_model"]


def files(seed: int, model: ModelSpec, checkpoint: CheckpointSpec, trained: Trained) -> dict[str, bytes]:
    """The checkpoint task: the trained model rebuilt from its weights, saved in every requested format."""
    if trained.schema is not None:
        return table_files(seed, model, checkpoint, trained)
    return as_files(models.restore(model, seed, trained.result.weights), formats_for(model, checkpoint))


def table_files(seed: int, model: ModelSpec, checkpoint: CheckpointSpec, trained: Trained) -> dict[str, bytes]:
    """A table model, preprocessing included, so every format takes raw columns by name:

    - `model.keras`: `keras.saving.load_model` (built-in layers only, no trainflow class needed, but for a
      date column's `tasks.model.dateparts.DateParts`: import that module first), called with the table's own
      column names;
    - `model.weights.h5` and `tf_checkpoint/` with `model.json` (`keras.models.model_from_json`) to rebuild into;
    - `saved_model/`: `serving_default` takes one named input per feature column (float32 numbers, strings;
      named `input_name`: a signature allows only letters, digits, '_', '.' and '-'; a date column's raw
      strings) and returns `prediction`, or `probabilities` and `class_index` (classes.json in the version maps
      an index to its label); NaN for a row whose encoded features hold one (`tabular.unknown_rows`); an images
      model also has `serving_bytes`, taking `image_bytes` (the files' encoded bytes) to the same outputs."""
    from tasks.model import tabular

    schema = trained.schema
    full, _, core = tabular.build(model, seed, schema)
    models.set_weights(core, trained.result.weights)
    formats = formats_for(model, checkpoint, table=True)
    with tempfile.TemporaryDirectory(prefix="trainflow-ckpt-") as tmp:
        root = Path(tmp)
        for fmt in formats:
            write_table_format(full, schema, fmt, root)
        if {"keras_weights", "tf_checkpoint"} & set(formats):
            (root / "model.json").write_text(full.to_json())
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_table_format(full: keras.Model, schema, fmt: str, root: Path) -> None:
    """Write a table model in one format under `root` (partial files may remain on failure)."""
    from tasks.model import tabular

    remember_keras_skipsets()
    if fmt == "keras":
        full.save(root / "model.keras")
    elif fmt == "keras_weights":
        full.save_weights(root / "model.weights.h5")
    elif fmt == "tf_checkpoint":
        tf.train.Checkpoint(model=full).write(str(root / "tf_checkpoint" / "ckpt"))
    elif fmt == "saved_model":
        archive = keras.export.ExportArchive()
        for layer in tabular.stateful_layers(full):  # not the columns' inputs: walking them cost seconds
            archive.track(layer)

        def serve(*tensors):  # the signature's keys are input_name; the Keras model's, keras_name
            inputs = tabular.serving_inputs(schema, tensors)
            # training=False: a stack's augmentation (RandomTranslation, …) is active when Keras is not told
            return tabular.serving_outputs(schema, full(inputs, training=False), tabular.unknown_rows(full, inputs))

        archive.add_endpoint(name="serving_default", fn=serve, input_signature=tabular.serving_signature(schema))
        if len(schema.features) == 1 and schema.features[0].source:  # images: encoded files too
            archive.add_endpoint(name="serving_bytes", fn=_decoding(serve, schema.features[0].shape),
                                 input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        archive.write_out(str(root / "saved_model"), verbose=False)
    else:
        raise ValueError(f"unknown checkpoint format {fmt!r}")


def _decoding(serve, shape: list):
    """An images model's `serving_bytes`: each PNG, JPEG, BMP or GIF file's bytes decoded by TensorFlow, converted
    to the training's channels and resized (bilinear) to its size, then `serving_default`'s model."""
    height, width, channels = shape

    def serve_bytes(encoded):
        def one(data):
            image = tf.io.decode_image(data, channels=channels, expand_animations=False)
            image = tf.image.resize(tf.cast(image, tf.float32), (height, width))
            return tf.ensure_shape(image, (height, width, channels))

        return serve(tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec((height, width, channels), tf.float32)))

    return serve_bytes


def remember_keras_skipsets() -> None:
    """Keras 3.15's saving looks up its per-type set of attributes to skip under one key
    (`saving_attr_skiplist_<type>`) and stores it under another (`saving_attr_skipset_<type>`), so it builds
    it again, a throwaway Layer and its dir(), for every layer it saves: 0.5 to 1.3 s of a 256-column table's
    `.keras` and `.weights.h5`. This stores the same sets where Keras looks, in this thread (Keras's state is
    per thread); without those internals (another Keras), saving just stays as slow."""
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib
    except ImportError:  # pragma: no cover - another Keras
        return
    for kind in ("Operation", "Layer", "Functional", "Sequential"):
        key = f"saving_attr_skiplist_{kind}"
        if global_state.get_global_attribute(key) is None:
            global_state.set_global_attribute(key, saving_lib.get_attr_skipset(kind))
