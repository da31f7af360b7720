"""A per-user secret key and HMACs over it: what a shared artifact root or a Prefect server cannot forge.

Anyone who can write the artifact root could replace a cached result, and anyone who can use the Prefect UI
could edit a Variable. Bytes signed with a key that lives outside both (a file in the running user's home,
readable only by that user) are bytes that trainflow itself wrote. The key is created on first use; machines
that share one artifact root (several workers, a team's file share) share the cache only if they hold the
same key: copy `~/.trainflow/key` to each of them. An entry signed with another key is a cache miss.

The home folder comes from the user database, not from `$HOME`, so a run whose environment was changed (a
deployment's job variables) still reads the key of the user it runs as.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pwd
import secrets
from functools import lru_cache
from pathlib import Path

DIGEST_SIZE = hashlib.sha256().digest_size


def key_path() -> Path:
    try:
        home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:  # a container user with no entry in the user database
        home = Path.home()
    return home / ".trainflow" / "key"


@lru_cache(maxsize=1)
def key() -> bytes:
    """This user's key, made (atomically: concurrent first runs agree on one) if there is none yet."""
    path = key_path()
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    draft = path.with_name(f".key-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_hex(32).encode())
    try:
        os.link(draft, path)  # fails if another process made the key first: then theirs is the key
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return _read(path)


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if os.fstat(f.fileno()).st_mode & 0o077:
            raise PermissionError(f"{path} is readable by other users; `chmod 600 {path}`")
        value = f.read().strip()
    if len(value) < 32:
        raise PermissionError(f"{path} holds no usable key (fewer than 32 characters)")
    return value


def sign(payload: bytes) -> bytes:
    return hmac.new(key(), payload, hashlib.sha256).digest()


def verify(payload: bytes, signature: bytes) -> bool:
    return hmac.compare_digest(sign(payload), signature)
