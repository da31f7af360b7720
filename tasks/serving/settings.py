"""How a server batches, bounds and watches: declared once here, read by `trainflow serve-model`'s options.

Light on purpose (no TensorFlow, no Starlette), so `trainflow serve-model --help` answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Where the server listens unless `--host` says otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"
#: TensorFlow Serving's REST port, so a client written for it needs no change.
DEFAULT_PORT = 8501


@dataclass(frozen=True)
class Settings:
    """Batching, request bounds and how often the aliases are looked at."""

    max_batch: int = 64  # rows per model call; 1 turns batching off (one request per call)
    batch_timeout_ms: float = 2.0  # the longest a request waits for others known to be on their way
    max_body_bytes: int = 16 * 2**20  # a larger request body is answered 413
    poll_seconds: float = 0.2  # how often `aliases.json`, its history and `latest` are looked at

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (the CLI exits 2 on any)."""
        found = []
        if self.max_batch < 1:
            found.append(f"--max-batch: must be at least 1 (1 turns batching off), got {self.max_batch}")
        if not 0 <= self.batch_timeout_ms <= 10_000:
            found.append(f"--batch-timeout-ms: must be between 0 and 10000, got {self.batch_timeout_ms:g}")
        if self.max_body_bytes < 1024:
            found.append(f"--max-body-mb: must allow at least 1 KiB, got {self.max_body_bytes} bytes")
        return found
