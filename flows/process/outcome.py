"""What a failed run tells its user is decided by what is on disk, and a lost server is named as such.

A run can fail after its version was published: the Prefect server died or hung while the run reported its
end, or the UI's calls failed. Saying "nothing was published" then is false, and a user re-running would
not know the version exists. So each run carries a token that publishing records in the manifest
(`run_token`); when the run fails, the store is asked whether a version with that token exists, and the
message names it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Optional

from tasks.common.errors import RunError


class PublishedThenFailed(RunError):
    """The run published (or reused) a version, then failed: the version stands."""

    def __init__(self, name: str, version: str, path: str, reused: bool, reason: str):
        self.name, self.version, self.path, self.reused = name, version, path, reused
        what = "reused the identical" if reused else "published"
        super().__init__(f"{what} {name}@{version} ({path}), then failed: {reason}")


def new_token() -> str:
    return uuid.uuid4().hex


def published_with(root: Path, name: str, token: str) -> Optional[tuple[str, str]]:
    """(label, path) of the version of `name` whose manifest holds this run token, newest first."""
    from tasks.publish.store import Store

    for version in reversed(Store(root).versions(name)):
        try:
            if version.manifest().get("run_token") == token:
                return version.label, str(version.path)
        except (OSError, ValueError, AttributeError):
            continue
    return None


def server_reason(exc: BaseException) -> Optional[str]:
    """A one-line reason when `exc` is the Prefect server not answering (gone, hung, refusing), else None."""
    import httpx

    chain, seen = exc, set()
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, (httpx.TransportError, httpx.HTTPStatusError)) or \
                "ephemeral Prefect API server" in str(chain):
            from prefect.settings import get_current_settings

            url = get_current_settings().api.url or "the temporary server"
            first = next((line.strip() for line in str(chain).splitlines() if line.strip()), "")
            return f"the Prefect server at {url} did not answer ({type(chain).__name__}: {first[:120]})"
        chain = chain.__cause__ or chain.__context__
    return None


def explain(exc: BaseException, root: Path, name: str, token: str, reused: Optional[dict] = None) -> BaseException:
    """The exception to raise for a failed run: `PublishedThenFailed` when a version of this run is on disk
    (or was reused), else `exc` itself, reworded when the server was the cause."""
    reason = server_reason(exc)
    on_disk = published_with(root, name, token)
    if on_disk is not None:
        explained = PublishedThenFailed(name, on_disk[0], on_disk[1], False, reason or str(exc)[:300])
    elif reused is not None:
        explained = PublishedThenFailed(name, reused["version"], reused["path"], True, reason or str(exc)[:300])
    elif reason is not None:
        explained = RunError(reason)
    else:
        return exc
    explained.server_lost = reason is not None  # the CLI then exits without waiting on Prefect's queues
    return explained
