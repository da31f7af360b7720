"""The `model:` section: what is fitted. Declared beside the models it builds (`tasks/model/`)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field

from tasks.common.sections import Section

KERAS_MODELS = ("keras_linear", "mlp")
LINEAR_MODELS = ("linear", "keras_linear")
#: A table's model when the spec names none, and what each kind gets on a table when left unsaid: two relu
#: layers (a tabular MLP's usual shape), and a linear model starting from zero weights, as least squares and
#: logistic regression do. The guide's one-input data keeps the schema's defaults (its w = 5.0, b = 0.0).
TABLE_MODEL_KIND = "mlp"
TABLE_MODEL_DEFAULTS = {"mlp": {"hidden": [256, 128], "activation": "relu"}, "linear": {"init": {"w": 0.0, "b": 0.0}}}


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


ModelSpec = Annotated[Union[LinearModel, KerasLinearModel, MlpModel], Field(discriminator="kind")]
