"""The versions a server answers with, and the hot swap when an alias (or `latest`) moves.

Each reference given to the server is a *route*: `churn@production` follows its alias, `churn` (or
`churn@latest`) follows `latest`, `churn@v3` stays on v0003. A route always has one checked, loaded version
(`Served`) answering. The registry looks at each series' `aliases.json`, `alias-history.jsonl` and `latest`
every `poll_seconds` (their size, time and inode; it reads them only when one changed) and, when a route's
reference names another version:

1. loads the new version beside the old one, in a thread of its own (requests keep being answered meanwhile);
2. checks it: its model files against the manifest's sha256 (`tasks.scoring.model.load_model`, the loader
   `predict` uses), the signature against what the version describes, and a warm-up request;
3. switches the route to it at once, on the event loop (one assignment): a request takes the version the route
   held when it arrived and finishes on it; the old version is dropped when its last request is answered.

A version that fails its check is never served: the route keeps its version, the failure is logged, counted in
`/metrics` and written to the alias's history, and the version is not tried again until the alias names another.
If the alias moves again while a version loads, the loaded one is switched to only if the alias still names it.
Each switch of an alias is recorded in its history (`decision: served`), so the history says which version
answered when. Only versions under the server's artifact root are served: references are names, resolved there.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tasks.lifecycle.aliases import Aliases, RefError, lookup, resolve, valid_alias
from tasks.publish.store import Store, Version
from tasks.scoring.model import InputError, Model, load_model
from tasks.scoring.outputs import class_labels
from tasks.serving import call, signature
from tasks.serving.batching import Batcher
from tasks.serving.metrics import Metrics
from tasks.serving.settings import Settings
from tasks.serving.signature import TensorSpec

log = logging.getLogger("trainflow.serving")


class ServeError(Exception):
    """A reference or version that cannot be served; the message says why in one line."""


class NotFound(Exception):
    """A request for a model, version or label this server does not serve (HTTP 404)."""


#: The signature a request gets when it names none (TensorFlow Serving's rule).
DEFAULT = "serving_default"


@dataclass(eq=False)
class Endpoint:
    """One signature of a served version: its function, what it takes and gives, and the batcher feeding it (each
    signature batches with its own kind: `serving_default`'s decoded pictures never share a call with
    `serving_bytes`' files)."""

    function: Any
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batcher: Optional[Batcher] = None


@dataclass(eq=False)
class Served:
    """One loaded, checked version: its signatures (`serving_default` first), and how it is being used."""

    version: Version
    model: Model
    endpoints: dict[str, Endpoint]
    seconds: float = 0.0  # how long loading and checking took
    routes: int = 0  # routes answering with it
    users: int = 0  # requests holding it
    memos: dict = field(default_factory=dict)  # text columns' converted values (`call.TextMemo`), by input key

    @property
    def ref(self) -> str:
        return f"{self.version.name}@{self.version.label}"

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.endpoints[DEFAULT].inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.endpoints[DEFAULT].outputs

    @property
    def batcher(self) -> Optional[Batcher]:
        """`serving_default`'s: every request is expected there when it arrives (`Registry.enter`)."""
        return self.endpoints[DEFAULT].batcher

    @property
    def others(self) -> dict[str, list[TensorSpec]]:
        """The other signatures' inputs, by name: what a request's `signature_name` may ask for."""
        return {name: endpoint.inputs for name, endpoint in self.endpoints.items() if name != DEFAULT}

    @functools.cached_property
    def class_labels(self) -> tuple[list, list[str]]:
        """A classifier's labels as `predict` writes them (their JSON values) and as probabilities' keys (text),
        worked out once rather than per request."""
        return class_labels(self.model.classes).to_pylist(), [str(c) for c in self.model.classes]

    def call(self, inputs: dict, name: str = DEFAULT) -> dict[str, np.ndarray]:
        """A signature on a batch (blocking TensorFlow work: call it from a worker thread)."""
        endpoint = self.endpoints[name]
        return call.call(self.model, endpoint.inputs, inputs, self.memos, endpoint.function)


def load_version(version: Version, root: Path) -> Served:
    """Load a version and check it before it may answer anything: inside the artifact root, its model files
    matching its manifest, its signature taking what it describes, and a warm-up row answered in shape (by
    `serving_default`; an images model's `serving_bytes` is the same model behind a decoder, in the same SavedModel)."""
    started = time.perf_counter()
    label = f"{version.name}@{version.label}"
    if not version.path.resolve().is_relative_to(root.resolve()):
        raise ServeError(f"{label}: its folder is outside the artifact root {root}; only versions there are served")
    try:
        model = load_model(version.path)
    except InputError as exc:
        raise ServeError(str(exc)) from None
    functions = {DEFAULT: model.signature, **{name: function for name, function in sorted(
        model.saved_model.signatures.items()) if name != DEFAULT}}
    served = Served(version, model, {name: Endpoint(function, signature.inputs(model, function),
                                                    signature.outputs(model, function))
                                     for name, function in functions.items()})
    try:
        answer = served.call(signature.warm_up_rows(served.inputs))
    except Exception as exc:  # TensorFlow's own errors: the version cannot answer
        raise ServeError(f"{label}: the warm-up request failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    for spec in served.outputs:
        value = answer.get(spec.key)
        if value is None or value.shape[:1] != (1,):
            raise ServeError(f"{label}: the warm-up request's output '{spec.key}' is not one row "
                             f"({None if value is None else value.shape})")
    if model.classes and answer[model.output_key].shape != (1, len(model.classes)):
        raise ServeError(f"{label}: the model gives {answer[model.output_key].shape[1:]} probabilities for the "
                         f"{len(model.classes)} classes of classes.json")
    served.seconds = time.perf_counter() - started
    return served


@dataclass(eq=False)
class Route:
    """A reference the server was given, and the version answering for it now."""

    name: str
    label: str  # an alias, "latest", or a version label (v0003) that never moves
    current: Served
    loading: Optional[str] = None  # the version label being loaded for it
    failed: dict[str, str] = field(default_factory=dict)  # version label -> why it was not served

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.label}"

    @property
    def follows(self) -> bool:
        return not re.fullmatch(r"v\d+", self.label)

    @property
    def is_alias(self) -> bool:
        return valid_alias(self.label)


class Registry:
    """Routes by model name; the first reference given for a name answers requests that name no label."""

    def __init__(self, root: Path, refs: list[str], settings: Settings = Settings(), metrics: Optional[Metrics] = None,
                 by: str = "server"):
        self.root, self.refs, self.settings = Path(root).absolute(), list(refs), settings
        self.metrics = metrics or Metrics()
        self.by = by  # who the alias history says served: "server 127.0.0.1:8501 (pid 123)"
        self.store = Store(self.root)
        self.routes: dict[str, list[Route]] = {}
        self._loaded: dict[tuple[str, str], Served] = {}
        self._seen: dict[str, tuple] = {}
        self._tasks: set[asyncio.Task] = set()
        self._watcher: Optional[asyncio.Task] = None
        self.model_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="trainflow-model")
        self.load_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainflow-load")

    # ------------------------------------------------------------------ start and stop

    def load(self) -> None:
        """Resolve and load every reference before the server listens (blocking); ServeError on the first that
        cannot be served."""
        for ref in self.refs:
            try:
                version = resolve(ref, self.root)
            except RefError as exc:
                raise ServeError(str(exc)) from None
            name, _, asked = ref.partition("@")
            label = version.label if re.fullmatch(r"v\d+", asked) else (asked or "latest")
            if any(r.label == label for r in self.routes.get(name, [])):
                continue
            served = self._loaded.get((name, version.label)) or load_version(version, self.root)
            self._loaded[(name, version.label)] = served
            served.routes += 1
            self.routes.setdefault(name, []).append(Route(name, label, served))
            self._seen[name] = self._fingerprint(name)

    async def start(self) -> None:
        """On the server's event loop: the batchers, the first history lines, and the watch on the aliases."""
        for route in self.all_routes():
            self._start_batcher(route.current)
            self._publish(route)
            if route.is_alias:
                self._background(self._note(route, "served", route.current.version.label, None, "the server started"))
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="trainflow-alias-watch")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        for task in list(self._tasks):
            task.cancel()
        for served in {id(r.current): r.current for r in self.all_routes()}.values():
            await self._close(served)
        self.model_pool.shutdown(wait=False, cancel_futures=True)
        self.load_pool.shutdown(wait=False, cancel_futures=True)

    def all_routes(self) -> list[Route]:
        return [route for routes in self.routes.values() for route in routes]

    # ------------------------------------------------------------------ requests

    def find(self, name: str, version: Optional[int] = None, label: Optional[str] = None) -> tuple[Optional[Route], Served]:
        """What answers a request for NAME, NAME/versions/N or NAME/labels/L, and the route it came by (None when
        asked by version number); NotFound says what is served."""
        routes = self.routes.get(name)
        if not routes:
            raise NotFound(f"Servable not found for request: {name[:64]!r} is not served here (served: "
                           f"{', '.join(self.routes) or 'none'})")
        if label is not None:
            route = next((r for r in routes if r.label == label), None)
            if route is None:
                raise NotFound(f"{name}: no label {label[:64]!r} is served here (served: "
                               f"{', '.join(r.label for r in routes)})")
            return route, route.current
        if version is not None:
            route = next((r for r in routes if r.current.version.number == version), None)
            if route is None:
                raise NotFound(f"Servable not found for request: {name} version {version} is not served here "
                               f"(served: {', '.join(str(r.current.version.number) for r in routes)})")
            return None, route.current  # asked by number: no label routed it
        return routes[0], routes[0].current

    def enter(self, served: Served) -> None:
        """A request now holds `served` (it finishes on it even if its route switches meanwhile)."""
        served.users += 1
        served.batcher.expect()

    def leave(self, served: Served) -> None:
        served.users -= 1
        if served.users == 0 and served.routes == 0:
            self._background(self._close(served))

    def status(self, name: str, version: Optional[int] = None, label: Optional[str] = None) -> list[dict]:
        """TensorFlow Serving's model_version_status entries: the versions answering, and those loading."""
        if version is not None or label is not None:  # one version: the one answering
            _, served = self.find(name, version, label)
            numbers = {served.version.number: "AVAILABLE"}
        else:
            self.find(name)
            numbers = {r.current.version.number: "AVAILABLE" for r in self.routes[name]}
            for route in self.routes[name]:
                if route.loading:
                    numbers.setdefault(int(route.loading[1:]), "LOADING")
        return [{"version": str(n), "state": state, "status": {"error_code": "OK", "error_message": ""}}
                for n, state in sorted(numbers.items())]

    # ------------------------------------------------------------------ watching and swapping

    def _fingerprint(self, name: str) -> tuple:
        folder, parts = self.root / name, []
        for file in ("aliases.json", "alias-history.jsonl"):
            try:
                stat = os.stat(folder / file)
                parts.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
            except OSError:
                parts.append(None)
        try:
            parts.append(os.readlink(folder / "latest"))
        except OSError:
            parts.append(None)
        return tuple(parts)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            try:
                self.poll()
            except Exception:  # never let a bad file stop the watch
                log.exception("looking for alias moves failed; trying again")

    def poll(self) -> None:
        """One look at every followed series: start a swap for each route whose reference names a new version."""
        for name, routes in self.routes.items():
            seen = self._fingerprint(name)
            if seen == self._seen.get(name):
                continue
            self._seen[name] = seen
            for route in routes:
                if not route.follows:
                    continue
                target = lookup(self.store, name, route.label)
                if target is None:
                    log.warning("%s: names no version now; still serving %s", route.ref, route.current.version.label)
                    continue
                route.failed = {k: v for k, v in route.failed.items() if k == target.label}
                if target.label in (route.current.version.label, route.loading) or target.label in route.failed:
                    continue
                route.loading = target.label
                self._background(self._swap(route, target))

    async def _swap(self, route: Route, target: Version) -> None:
        loop = asyncio.get_running_loop()
        previous = route.current.version.label
        try:
            served = self._loaded.get((route.name, target.label))
            if served is None:
                served = await loop.run_in_executor(self.load_pool, load_version, target, self.root)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ServeError) else f"{type(exc).__name__}: {exc}"
            route.failed[target.label] = reason
            self.metrics.swap_failures.labels(route.name, route.label).inc()
            log.error("%s: %s failed its check and is not served (still %s): %s", route.ref, target.label, previous,
                      reason)
            if route.is_alias:
                await self._note(route, "not served", target.label, previous, reason[:300])
            return
        finally:
            route.loading = None
        now = lookup(self.store, route.name, route.label)
        if now is None or now.label != target.label:
            log.info("%s: moved again while %s loaded; not switched to it", route.ref, target.label)
            return
        old = route.current
        self._loaded[(route.name, target.label)] = served
        self._start_batcher(served)
        served.routes += 1
        route.current = served  # the switch: requests from now on take the new version
        self._release(old)
        self._publish(route)
        self.metrics.swaps.labels(route.name, route.label).inc()
        log.info("%s: now %s (was %s; loaded and checked in %.2f s)", route.ref, target.label, previous, served.seconds)
        if route.is_alias:
            await self._note(route, "served", target.label, previous, f"loaded and checked in {served.seconds:.2f} s")

    def _start_batcher(self, served: Served) -> None:
        name = served.version.name
        for signature_name, endpoint in served.endpoints.items():
            if endpoint.batcher is None:
                endpoint.batcher = Batcher(functools.partial(served.call, name=signature_name), self.settings.max_batch,
                                           self.settings.batch_timeout_ms / 1000, self.model_pool,
                                           lambda rows, n: self.metrics.batched(name, rows, n))
                endpoint.batcher.start()

    @staticmethod
    async def _close(served: Served) -> None:
        for endpoint in served.endpoints.values():
            if endpoint.batcher is not None:
                await endpoint.batcher.close()

    def _release(self, served: Served) -> None:
        served.routes -= 1
        if served.routes == 0:
            self._loaded.pop((served.version.name, served.version.label), None)
            if served.users == 0:
                self._background(self._close(served))

    def _publish(self, route: Route) -> None:
        self.metrics.version.labels(route.name, route.label).set(route.current.version.number)

    async def _note(self, route: Route, decision: str, to: str, previous: Optional[str], reason: str) -> None:
        """The alias's history line for what the server now serves (best effort: a read-only root is a warning)."""
        def write() -> None:
            Aliases(self.store, route.name).note(route.label, decision, to, previous, by=self.by, reason=reason)

        try:
            await asyncio.get_running_loop().run_in_executor(None, write)
        except OSError as exc:
            log.warning("%s: could not write the alias history (%s)", route.ref, exc.strerror or exc)

    def _background(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
