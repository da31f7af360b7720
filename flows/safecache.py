"""The task cache's format on disk: results Prefect stores and loads without ever running code from them.

Prefect writes a result record (JSON) whose metadata names the serializer that reads its payload back, and
it trusts that name: a record claiming the `pickle` serializer is unpickled, so anyone who can write to
the artifact root could run code on every machine that reads its cache. Here:

- `SafeSerializer` ("trainflow-safe") writes payloads with `tasks.safedata` (JSON and NumPy arrays, with a
  sha256 of the content), whose loading executes nothing;
- `SafeResultStorage` is the local file system Prefect reads records from, refusing any record that does
  not name `trainflow-safe` before Prefect gets to deserialize it.

A refused or damaged entry is a cache miss: the task is recomputed and its entry rewritten, and
`flows.experiment.GraphRunner` logs a warning naming the task.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from prefect.filesystems import LocalFileSystem
from prefect.serializers import Serializer

from tasks import safedata

SERIALIZER = "trainflow-safe"


class SafeSerializer(Serializer):
    """Results as `tasks.safedata` bytes: plain data and the project's result dataclasses, never pickles."""

    type: Literal["trainflow-safe"] = SERIALIZER

    def dumps(self, obj: Any) -> bytes:
        return safedata.encode(obj)

    def loads(self, blob: bytes) -> Any:
        return safedata.decode(blob)


class SafeResultStorage(LocalFileSystem):
    """A local folder of result records that hands Prefect only records written by `SafeSerializer`."""

    _block_type_name = "trainflow safe result storage"

    @staticmethod
    def check(content: bytes) -> bytes:
        try:
            record = json.loads(content)
            serializer = record["metadata"]["serializer"]["type"]
        except (ValueError, KeyError, TypeError):
            raise ValueError("not a trainflow result record") from None
        if serializer != SERIALIZER:
            raise ValueError(f"refused a cached result written with the {serializer!r} serializer "
                             f"(only {SERIALIZER!r} is read: loading it runs no code)")
        return content

    def read_path(self, path: str, _sync: bool = True) -> bytes:
        return self.check(super().read_path(path, _sync=True))

    async def aread_path(self, path: str) -> bytes:
        return self.check(await super().aread_path(path))
