"""Task results as bytes whose loading executes nothing: JSON for structure, NumPy arrays without pickle.

The task cache lives in the artifact root, which on a shared server many people (and machines) can write.
A pickle there would run whatever a writer put in it on every machine that reads the cache. So results are
encoded here instead: plain values and an allowlist of the project's own dataclasses (`ALLOWED`, rebuilt
by calling their constructors), arrays of numbers, booleans and text in an `.npz` read with
`allow_pickle=False`, bytes as uint8 arrays. The encoding starts with an HMAC-SHA256 of its payload under
the user's key (`tasks.cache.signing`), so only a holder of the key can write an entry that loads; an entry whose
HMAC does not match, that does not parse, or that names a class outside the allowlist is refused, never
loaded.
"""

from __future__ import annotations

import dataclasses
import io
import json
from functools import lru_cache
from typing import Any

import numpy as np

from tasks.cache import signing

MAGIC = b"TFSAFE2\n"


class UnsafeData(ValueError):
    """Bytes that are not a trainflow result: damaged, altered, or naming a type outside the allowlist."""


@lru_cache(maxsize=1)
def allowed() -> dict[str, type]:
    """The dataclasses a cached result may hold, by name: the plain results tasks hand each other."""
    from tasks import results
    from tasks.plots import figures
    from tasks.train import resume

    classes = [results.Dataset, results.TrainData, figures.Figure, figures.Panel, figures.Series, results.ModelState, results.TrainResult,
               results.Trained, results.TestOutputs, results.Schema, results.Feature, results.Split,
               results.TrialOutcome, results.Rung, resume.Snapshot]
    return {cls.__name__: cls for cls in classes}


def encode(value: Any) -> bytes:
    """`value` as bytes `decode` gives back; TypeError for anything outside what it may hold."""
    arrays: dict[str, np.ndarray] = {}

    def array(a: np.ndarray) -> dict:
        if a.dtype.kind not in "biufcUS":
            raise TypeError(f"cannot cache an array of {a.dtype} (only numbers, booleans and text)")
        key = f"a{len(arrays)}"
        arrays[key] = a
        return {"__array__": key}

    def walk(v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, np.ndarray):
            return array(v)
        if isinstance(v, np.generic):
            return walk(v.item())
        if isinstance(v, bytes):
            return {"__bytes__": array(np.frombuffer(v, np.uint8))["__array__"]}
        if isinstance(v, tuple):
            return {"__tuple__": [walk(x) for x in v]}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise TypeError("cannot cache a dict with keys that are not strings")
            return {"__dict__": {k: walk(x) for k, x in v.items()}}
        name = type(v).__name__
        if dataclasses.is_dataclass(v) and allowed().get(name) is type(v):
            return {"__dataclass__": name, "fields": {f.name: walk(getattr(v, f.name)) for f in dataclasses.fields(v)
                                                      if f.init}}
        raise TypeError(f"cannot cache a {type(v).__module__}.{name}: not in tasks.cache.safedata.allowed()")

    structure = json.dumps(walk(value)).encode()
    buffer = io.BytesIO()
    np.savez(buffer, __structure__=np.frombuffer(structure, np.uint8), **arrays)
    payload = buffer.getvalue()
    return MAGIC + signing.sign(payload) + payload


def decode(blob: bytes) -> Any:
    """What `encode` made; UnsafeData for anything else. Executes no code from the bytes."""
    size = signing.DIGEST_SIZE
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + size:
        raise UnsafeData("not a trainflow result (or one from an older trainflow)")
    signature, payload = blob[len(MAGIC):len(MAGIC) + size], blob[len(MAGIC) + size:]
    if not signing.verify(payload, signature):
        raise UnsafeData("the result's HMAC does not match: altered, or written with another key")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        structure = json.loads(arrays.pop("__structure__").tobytes())
    except Exception as exc:  # a signed entry parses; anything else is damage, whatever numpy or json raise
        raise UnsafeData(f"the result does not parse ({type(exc).__name__})") from None

    def build(v: Any) -> Any:
        if isinstance(v, list):
            return [build(x) for x in v]
        if not isinstance(v, dict):
            return v
        if "__array__" in v:
            return arrays[v["__array__"]]
        if "__bytes__" in v:
            return arrays[v["__bytes__"]].tobytes()
        if "__tuple__" in v:
            return tuple(build(x) for x in v["__tuple__"])
        if "__dict__" in v:
            return {k: build(x) for k, x in v["__dict__"].items()}
        if "__dataclass__" in v:
            cls = allowed().get(v["__dataclass__"])
            if cls is None:
                raise UnsafeData(f"the result names a type outside the allowlist: {v['__dataclass__']!r}")
            return cls(**{k: build(x) for k, x in v["fields"].items()})
        raise UnsafeData("the result holds an unknown structure")

    try:
        return build(structure)
    except UnsafeData:
        raise
    except Exception as exc:  # a structure that does not fit its types: missing arrays, recursion, bad fields
        raise UnsafeData(f"the result does not fit its types ({type(exc).__name__})") from None
