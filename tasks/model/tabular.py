"""Models of a table: Keras preprocessing inside the model, so a saved model takes raw columns by name.

A table model is two Keras models composed:
- `preprocess`: one named input per feature column; text goes through a `StringLookup` with the training
  split's vocabulary and one out-of-vocabulary bucket (one-hot), a date column's strings through `DateParts`
  (year and day of month, then month, day of week, day of year and a datetime's hour as sin/cos: the one
  trainflow layer, registered); the columns are concatenated, and numbers (a date's year and day too)
  standardised with the training split's means and variances by one `Normalization` layer over the whole
  vector (when `data.normalize`; a one-hot block passes it unchanged);
- `core`: the learned part, from that vector to the output: `linear` is one Dense layer (one weight per
  encoded input), `mlp` adds hidden Dense layers with dropout. Regression outputs a value (with
  `data.normalize`, a standardised one mapped back to the target's units by a final `Rescaling` layer,
  `target_units`, so the saved model gives the target's units and starts near the training mean with the
  target's spread), two classes the positive class's probability, more classes a softmax. Training fits
  the core without that layer on z-scores of the target (`trained_core`): the optimiser's steps then do not
  grow with the target's variance; every metric is still reported in the target's units.

The full model is `core(preprocess(inputs))`, keyed by the table's own column names (`keras_name`), returning
values [N] (regression) or class probabilities [N, K] (classification, two classes included, as the
SavedModel does; the core's [N] positive-class probability is stacked with its complement). Training encodes each split once through `preprocess` and
trains `core` on the matrix (XLA-compiled; string lookups are not), so what is saved and what was trained
are the same layers. Only built-in Keras layers are used, but for a date column's `DateParts`: a `.keras` file
loads with plain Keras (with a date column, once `tasks.model.dateparts` is imported; the SavedModel needs
nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tasks.data.dates import NUMBER_PARTS
from tasks.model.core import build_core, outputs  # noqa: F401  (outputs: the head's width, for callers)
from tasks.model.dateparts import DateParts, moments as date_moments
from tasks.model.spec import ModelSpec
from tasks.results import Schema, Split

#: Rows encoded per call of the preprocessing model.
ENCODE_BATCH = 65_536


def build(model: ModelSpec, seed: int, schema: Schema) -> tuple[keras.Model, keras.Model, keras.Model]:
    """(full, preprocess, core) for the schema; the core's weights are seeded, the preprocessing's are the schema's."""
    inputs, encoded, means, variances = {}, [], [], []
    for feature in schema.features:
        if feature.kind == "number":
            tensor = keras.Input(shape=(1,), name=keras_name(feature), dtype="float32")
            inputs[keras_name(feature)] = tensor
            encoded.append(tensor)
            means.append(feature.mean)
            variances.append(max(feature.variance, 1e-12))
        elif feature.kind == "text":
            tensor = keras.Input(shape=(1,), name=keras_name(feature), dtype="string")
            inputs[keras_name(feature)] = tensor
            lookup = keras.layers.StringLookup(vocabulary=list(feature.vocabulary), num_oov_indices=1,
                                               output_mode="one_hot", name=f"lookup_{feature.input_name}")
            encoded.append(lookup(tensor))
            width = lookup.vocabulary_size()
            means += [0.0] * width  # a one-hot block passes the normalization unchanged
            variances += [1.0] * width
        elif feature.kind == "date":  # the raw strings, taken apart by TensorFlow string ops inside the model
            tensor = keras.Input(shape=(1,), name=keras_name(feature), dtype="string")
            inputs[keras_name(feature)] = tensor
            fill = [feature.moments[p][0] for p in NUMBER_PARTS] if schema.impute else None
            encoded.append(DateParts(feature.parts, fill, name=f"date_{feature.input_name}")(tensor))
            block_means, block_variances = date_moments(feature)
            means += block_means  # the year and the day standardised; sin and cos pass unchanged
            variances += block_variances
        else:  # an array of any shape, standardised by its training split's mean and variance of all its values
            tensor = keras.Input(shape=tuple(feature.shape), name=keras_name(feature), dtype="float32")
            inputs[keras_name(feature)] = tensor
            # images (a decoded cache's rows, `source`) are not standardised: their model scales them itself
            encoded.append(keras.layers.Normalization(axis=None, mean=feature.mean,
                                                      variance=max(feature.variance, 1e-12),
                                                      name=f"normalize_{feature.input_name}")(tensor)
                           if schema.normalize and not feature.source else tensor)
    joined = encoded[0] if len(encoded) == 1 else keras.layers.Concatenate(name="features")(encoded)
    if schema.normalize and any(f.kind in ("number", "date") for f in schema.features):
        # one layer for every numeric column (a layer per column made a 256-column table's SavedModel take
        # seconds per hundred layers to trace and walk), the same arithmetic, the same order of the encoding
        joined = keras.layers.Normalization(mean=means, variance=variances, name="normalize")(joined)
    if model.kind in ("mlp", "linear") and len(joined.shape) > 2:  # Dense layers take a vector: the network step's
        joined = keras.layers.Flatten(name="flatten")(joined)      # batched matmuls then train arrays too
    preprocess = keras.Model(inputs, joined, name="preprocess")
    core = build_core(model, seed, tuple(joined.shape[1:]), schema, Path(getattr(model, "path", None) or "."))
    k = outputs(schema)
    predicted = core(preprocess(inputs))
    if schema.task == "classification" and k == 1:  # [N, 2] like the SavedModel's probabilities, not core's [N]
        positive = keras.layers.Reshape((1,), name="positive")(predicted)
        negative = keras.layers.Rescaling(-1.0, offset=1.0, name="negative")(positive)
        predicted = keras.layers.Concatenate(name="probabilities")([negative, positive])
    full = keras.Model(inputs, predicted, name="table_model")
    return full, preprocess, core


def trained_core(core: keras.Model) -> keras.Model:
    """What training fits: the core itself, or for a standardised regression target the same graph up to (not
    through) `target_units`, giving z-scores with the same weights (`tasks.train.steps.Objective.units` maps them
    back for every metric)."""
    names = [layer.name for layer in core.layers]
    if "target_units" not in names:
        return core
    z = core.get_layer("target_units").input
    if "squeeze" in names and len(z.shape) == 2:
        z = keras.layers.Reshape((), name="squeeze_z")(z)
    return keras.Model(core.input, z, name="core_z")


def stateful_layers(full: keras.Model) -> list:
    """The layers of a table model that hold weights or lookup tables (the normalization, each column's lookup,
    the core): what a SavedModel export must track. Leaving out one input layer per column keeps a wide
    table's export from walking hundreds of objects that hold nothing."""
    preprocess, core = full.get_layer("preprocess"), full.get_layer("core")
    return [layer for layer in preprocess.layers if not isinstance(layer, keras.layers.InputLayer)
            and (layer.weights or isinstance(layer, keras.layers.StringLookup))] + [core]


def keras_name(feature) -> str:
    """The key of a column in the Keras model's inputs: the column's own name, unless it holds '/', which Keras
    refuses in a name (then its SavedModel name, `input_name`)."""
    return feature.input_name if "/" in feature.name else feature.name


def feed(schema: Schema, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Raw columns as the model's inputs: [N, 1] float32 numbers and strings, keyed by `keras_name`; an image
    input's row numbers read from the decoded cache (uint8, cast per batch)."""
    from tasks.data.pixels import resolve

    fed = {}
    for feature in schema.features:
        values = columns[feature.name]
        if feature.kind == "number":
            fed[keras_name(feature)] = np.asarray(values, np.float32).reshape(-1, 1)
        elif feature.kind in ("text", "date"):
            fed[keras_name(feature)] = np.asarray(values).astype(str).reshape(-1, 1)
        elif feature.source:  # images: row numbers into the decoded cache
            fed[keras_name(feature)] = resolve(values, feature.source)
        else:
            fed[keras_name(feature)] = np.asarray(values, np.float32)
    return fed


def encode(preprocess: keras.Model, schema: Schema, split: Split):
    """A split's feature matrix, through the preprocessing layers, in batches. Images whose preprocessing is
    nothing (the layer stack scales them) stay on disk: a `tasks.data.pixels.Rows` view of the decoded cache,
    which the trainers read a minibatch at a time (uint8, cast per batch by Keras), so a split of any size is
    never held whole."""
    if len(preprocess.layers) == 1 and len(schema.features) == 1 and schema.features[0].source:
        from tasks.data.pixels import Rows

        (feature,) = schema.features
        return Rows(feature.source, split.inputs[feature.name])
    fed = feed(schema, split.inputs)
    n = len(split)
    if n == 0:
        return np.zeros((0, *(int(d) for d in preprocess.output.shape[1:])), np.float32)
    parts = []
    for start in range(0, n, ENCODE_BATCH):
        batch = {k: tf.constant(v[start:start + ENCODE_BATCH]) for k, v in fed.items()}
        parts.append(np.asarray(preprocess(batch), np.float32))
    return np.concatenate(parts)


def serving_signature(schema: Schema) -> list[tf.TensorSpec]:
    """One named input per feature: a column's vector of raw values (float32 numbers, strings), or an array's
    [N, *shape] float32."""
    return [tf.TensorSpec([None, *f.shape], tf.float32, name=f.input_name) if f.kind == "tensor" else
            tf.TensorSpec([None], tf.float32 if f.kind == "number" else tf.string, name=f.input_name)  # text, date
            for f in schema.features]


def serving_inputs(schema: Schema, tensors) -> dict[str, Any]:
    """The signature's tensors (in `schema.features` order) as the Keras model's inputs: a column's vector as
    [N, 1], an array as it is."""
    return {keras_name(f): t if f.kind == "tensor" else tf.reshape(t, [-1, 1]) for f, t in zip(schema.features, tensors)}


def unknown_rows(full: keras.Model, inputs: dict) -> Any:
    """[N] bool: the rows whose encoded features hold a NaN (an empty number or date without imputation, a date
    that is not one). A compiled graph's fused Dense + relu (oneDNN's) maps NaN to 0, so without this mark such a
    row would get an arbitrary prediction from a SavedModel where the Keras model gives NaN."""
    encoded = full.get_layer("preprocess")(inputs)
    return tf.reduce_any(tf.math.is_nan(tf.reshape(encoded, [tf.shape(encoded)[0], -1])), axis=1)


def serving_outputs(schema: Schema, predicted: Any, unknown: Any = None) -> dict[str, Any]:
    """What the SavedModel's serving_default returns, from the full model's output: `prediction` (regression)
    or `probabilities` [N, K] and `class_index` (classification; the version's classes.json maps an index back
    to its label); NaN in every output value of a row `unknown` marks (scoring counts it unscored)."""
    if unknown is not None:
        mask = tf.reshape(unknown, [-1] + [1] * (len(predicted.shape) - 1))
        predicted = tf.where(mask, tf.constant(float("nan"), predicted.dtype), predicted)
    if schema.task == "regression":
        return {"prediction": predicted}
    return {"probabilities": predicted, "class_index": tf.argmax(predicted, axis=1, output_type=tf.int32)}
