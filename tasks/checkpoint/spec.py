"""The `checkpoint:` section: the formats a trained model is saved in. Declared beside the saving code
(`tasks/checkpoint/save.py`)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from tasks.common.sections import Section

CHECKPOINT_FORMATS = ("tf_checkpoint", "keras_weights", "keras", "saved_model")


class CheckpointSpec(Section):
    formats: Optional[list[Literal[CHECKPOINT_FORMATS]]] = Field(  # type: ignore[valid-type]
        None,
        description="Formats to write; null means every format the model supports. "
        "'keras_weights' and 'keras' need a Keras model.",
    )
