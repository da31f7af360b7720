"""The `model:` section: what is fitted. Declared beside the models it builds (`tasks/model/`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, model_validator

from tasks.common.sections import NOT_KEYED, CrossFieldError, Section

KERAS_MODELS = ("keras_linear", "mlp")
LINEAR_MODELS = ("linear", "keras_linear")
#: A table's model when the spec names none, and what each kind gets on a table when left unsaid: two relu
#: layers (a tabular MLP's usual shape), and a linear model starting from zero weights, as least squares and
#: logistic regression do. The guide's one-input data keeps the schema's defaults (its w = 5.0, b = 0.0).
TABLE_MODEL_KIND = "mlp"
TABLE_MODEL_DEFAULTS = {"mlp": {"hidden": [256, 128], "activation": "relu"}, "linear": {"init": {"w": 0.0, "b": 0.0}}}
#: What a folder of images gets when the spec gives no model: a small CNN as a layer stack the user can copy
#: and edit. Pixels are scaled to [0, 1] inside the model (so the SavedModel takes raw 0..255 values);
#: RandomTranslation (up to 10% of each side, active only while training) is the augmentation: a shift never
#: changes what a picture shows. Flips are left out: a mirrored digit or letter is another label (or none).
IMAGE_MODEL_DEFAULTS = {"kind": "keras", "layers": [
    {"Rescaling": {"scale": 1 / 255, "offset": 0.0}},
    {"RandomTranslation": {"height_factor": 0.1, "width_factor": 0.1, "fill_mode": "constant"}},
    {"Conv2D": {"filters": 16, "kernel_size": 3, "padding": "same", "activation": "relu"}},
    {"MaxPooling2D": {"pool_size": 2}},
    {"Conv2D": {"filters": 32, "kernel_size": 3, "padding": "same", "activation": "relu"}},
    {"MaxPooling2D": {"pool_size": 2}},
    {"Conv2D": {"filters": 64, "kernel_size": 3, "padding": "same", "activation": "relu"}},
    {"GlobalMaxPooling2D": {}},
    {"Dropout": {"rate": 0.2}},
]}


class LinearInit(Section):
    w: float = Field(5.0, description="Initial slope; the guide starts at 5.0 (a table's linear model: every "
                     "input's weight, default 0.0).")
    b: float = Field(0.0, description="Initial intercept; the guide starts at 0.0.")


class LinearModel(Section):
    """The guide's `MyModel(tf.Module)`: f(x) = w·x + b."""

    kind: Literal["linear"] = Field(description="The guide's tf.Module with two tf.Variables.")
    init: LinearInit = Field(default_factory=LinearInit, description="Initial values of w and b.")


class KerasLinearModel(Section):
    """The guide's `MyModelKeras`, with weights made by `add_weight` so Keras 3 tracks and trains them."""

    kind: Literal["keras_linear"] = Field(description="A keras.Model subclass computing w·x + b.")
    init: LinearInit = Field(default_factory=LinearInit, description="Initial values of w and b.")


class MlpModel(Section):
    """A small fully connected network, for data that is not a line."""

    kind: Literal["mlp"] = Field(description="Dense layers, seeded Glorot initialisation.")
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        [32, 32], min_length=1, max_length=16, description="Width of each hidden layer (tables: default [64, 64])."
    )
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "silu", "elu"] = Field(
        "tanh", description="Activation of the hidden layers (tables: default relu)."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout rate after each hidden layer (tables).")
    init_seed: Optional[int] = Field(
        None, ge=0, le=2**31 - 1,
        description="Seed of the initial weights; null: the spec's seed. A sweep can vary it alone (the data's "
        "splits and shuffles keep the spec's seed), and such trials still train fused.",
    )


#: What `output` can be: trainflow adds the task's head (classes, or values in the target's units), or the stack
#: is the whole model.
OUTPUTS = ("auto", "none")
_OUTPUT_DESCRIPTION = ("auto: trainflow adds the head the task needs after the body (a softmax over the classes, a "
                       "sigmoid for two, or a value per target in the target's units). none: the body is the whole "
                       "model, its last layer gives the output, and its shape is checked against the task.")


class KerasModel(Section):
    """Any Keras model as a list of Keras's own layers, with their constructor arguments. trainflow adds the
    input from the data's shape (and a table's encoding) and, unless `output: none`, the head from the task."""

    kind: Literal["keras"] = Field(description="Keras layers, in order, built with Keras's own deserialisation.")
    layers: list[dict[str, Any]] = Field(
        min_length=1, description="The body: each item is one keras.layers class and its arguments, e.g. "
        "{Conv2D: {filters: 16, kernel_size: 3, activation: relu}}; also {Residual: {layers: [...]}} (added to its "
        "input) and {Branches: {layers: [[...], [...]], merge: Concatenate}}.")
    output: Literal[OUTPUTS] = Field("auto", description=_OUTPUT_DESCRIPTION)  # type: ignore[valid-type]
    init_seed: Optional[int] = Field(
        None, ge=0, le=2**31 - 1, description="Seed of the initial weights (and of layers' own randomness, such as "
        "dropout and augmentation); null: the spec's seed.")

    @model_validator(mode="after")
    def _known_layers(self) -> "KerasModel":
        from tasks.model.catalog import check_stack

        problems = check_stack(self.layers)
        if problems:
            raise CrossFieldError(problems, relative=True)
        return self


class PythonModel(Section):
    """Your own model: `build(input_shape, **args)` in a module beside the spec (or importable) returns a
    keras.Model or layer, the body; trainflow adds the input and, unless `output: none`, the head."""

    kind: Literal["python"] = Field(description="A builder function of your own.")
    builder: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
        description="module:function, e.g. my_models:build; the module is looked up beside the spec first. Its "
        "source, and that of the local modules it imports, is part of the cache keys.")
    args: dict[str, Any] = Field({}, description="Keyword arguments of the builder (plain values); a sweep can vary them.")
    path: Annotated[str, NOT_KEYED] = Field(
        ".", min_length=1, description="The folder the builder's module is looked up in, relative to the spec "
        "file's folder (then on Python's import path). Cache keys hold the modules' code, not this path.")
    output: Literal[OUTPUTS] = Field("auto", description=_OUTPUT_DESCRIPTION)  # type: ignore[valid-type]
    init_seed: Optional[int] = Field(
        None, ge=0, le=2**31 - 1, description="Seed Keras's random state is set to before the builder runs; null: "
        "the spec's seed.")


#: Models built of Keras layers for any data with a target (a table, arrays): their body is the spec's, their
#: input and head trainflow's.
BODY_MODELS = ("keras", "python")

ModelSpec = Annotated[Union[LinearModel, KerasLinearModel, MlpModel, KerasModel, PythonModel],
                      Field(discriminator="kind")]
