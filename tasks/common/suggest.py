""""Did you mean": the closest known name to a misspelt one, for every message that names a choice."""

from __future__ import annotations

import difflib
from typing import Iterable, Optional


def closest(word: str, choices: Iterable[str]) -> Optional[str]:
    """The known choice closest to `word`, or None when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest choice, or "" when none is close."""
    close = closest(word, choices)
    return f" (did you mean '{close}'?)" if close else ""
