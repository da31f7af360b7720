"""The base of every spec section, and the marks a section's fields can carry.

Each stage declares the section it reads beside its work (`tasks/data/spec.py`, `tasks/train/spec.py`, …);
`flows.spec` composes them into the whole spec. These pieces are what they share.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class NotKeyed:
    """Marks a field that cannot change a task's result (how often state is saved, where a hashed file lives):
    it is left out of every cache key, so changing it keeps cached results."""

    def __repr__(self) -> str:
        return "NotKeyed"


NOT_KEYED = NotKeyed()


class CrossFieldError(ValueError):
    """Several fields that are each valid but do not fit together; keeps each problem's own dotted path."""

    def __init__(self, problems: list[tuple[str, str]], relative: bool = False):
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))
        self.problems = problems
        self.relative = relative  # paths are relative to the section that raised, not to the spec


class Section(BaseModel):
    """Base for every spec section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)
