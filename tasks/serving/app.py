"""The HTTP side: TensorFlow Serving's REST API over a `Registry`, as an ASGI app for uvicorn.

    GET  /v1/models/NAME[/versions/N|/labels/L]             status (the versions answering, and those loading)
    GET  /v1/models/NAME[/versions/N|/labels/L]/metadata    the signature, and trainflow's columns and classes
    POST /v1/models/NAME[/versions/N|/labels/L]:predict     {"instances": [...]} or {"inputs": {...}}
    GET  /healthz                                           200 with what each label serves
    GET  /metrics                                           Prometheus's text format

`/v1/models/…` is answered by a plain ASGI handler (`ModelAPI`): it is the hot path, and Starlette's routing,
middleware and request and response objects cost a one-row prediction more than its parsing does. Starlette
serves the rest (`/healthz`, `/metrics`, 404s) and runs the registry's start and stop.

NAME alone is answered by the first reference the server was given for that name. Every error is
`{"error": "..."}`: 400 for a request the model cannot take (naming the field, never quoting its value), 404 for
a model, version or label not served here, 405 for the wrong method, 413 for a body over the limit, and 500 for
the server's own failure (logged with its traceback; the server goes on). Nothing a request sends can stop the
server: every handler answers or is cancelled with its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Optional

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tasks.serving import responses
from tasks.serving.metrics import CONTENT_TYPE
from tasks.serving.parse import RequestError, parse
from tasks.serving.registry import NotFound, Registry

log = logging.getLogger("trainflow.serving")

PREFIX = "/v1/models/"
PATH = re.compile(r"^(?P<name>[^/:]+)(?:/versions/(?P<version>\d{1,9})|/labels/(?P<label>[^/:]+))?"
                  r"(?P<tail>/metadata|:predict|:classify|:regress)?$")
APIS = {None: "status", "/metadata": "metadata", ":predict": "predict"}
#: Bodies larger than this are parsed in a worker thread, so a big request does not hold up the others.
PARSE_IN_THREAD = 256 * 1024
JSON = [(b"content-type", b"application/json")]


class _Gone(Exception):
    """The client went away before its request was read: nobody to answer."""


class _Answer(Exception):
    """An answer other than 200, with its status and extra headers."""

    def __init__(self, status: int, message: str, headers: Optional[list] = None):
        self.status, self.message, self.headers = status, message, headers or []


async def read_body(scope: dict, receive, limit: int) -> bytes:
    """The body, or RequestError 413 past `limit` bytes. A body a little over is read to its end first (up to
    four times the limit), so the client, still sending, gets the answer rather than a broken connection."""
    declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > 4 * limit:
        raise RequestError(f"request body of {int(declared)} bytes is over this server's limit of {limit} bytes", 413)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > 4 * limit:
            break
        if not message.get("more_body", False):
            break
    if size > limit:
        raise RequestError(f"request body over this server's limit of {limit} bytes", 413)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ModelAPI:
    """`/v1/models/…` as a plain ASGI handler: status, metadata and predict."""

    def __init__(self, registry: Registry):
        self.registry, self.metrics, self.limit = registry, registry.metrics, registry.settings.max_body_bytes

    async def __call__(self, scope: dict, receive, send) -> None:
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        match = PATH.match(path[len(PREFIX):])
        api = APIS.get(match["tail"], "other") if match else "other"
        name = match["name"] if match else ""
        headers = JSON
        try:
            status, body = 200, await self._answer(scope, receive, method, match, api)
        except asyncio.CancelledError:
            raise
        except _Gone:
            return
        except RequestError as exc:
            status, body = exc.status, responses.error(exc.message)
        except NotFound as exc:
            status, body = 404, responses.error(str(exc))
        except _Answer as exc:
            status, body, headers = exc.status, responses.error(exc.message), JSON + exc.headers
        except Exception:
            log.exception("%s %s failed", method, path[:200])
            status, body = 500, responses.error("the server failed on this request (its log has the details)")
        self.metrics.answered(name if name in self.registry.routes else "", api, status, time.perf_counter() - started)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: dict, receive, method: str, match: Optional[re.Match], api: str) -> bytes:
        if match is None or api == "other":
            what = "classify and regress are not served; use :predict" if match else "no such API"
            raise NotFound(f"{what} (see GET /v1/models/NAME, …/metadata and POST …:predict)")
        wanted = "POST" if api == "predict" else "GET"
        if method != wanted:
            raise _Answer(405, f"{api} takes {wanted}, not {method}", [(b"allow", wanted.encode())])
        registry = self.registry
        name, label = match["name"], match["label"]
        version = int(match["version"]) if match["version"] else None
        if api == "status":
            entries = registry.status(name, version, label)
            routes = [r for r in registry.routes[name] if label is None or r.label == label]
            return responses.dumps(responses.status(entries, routes))
        route, served = registry.find(name, version, label)
        if api == "metadata":
            return responses.dumps(responses.metadata(served, registry.routes[name]))
        return await self._predict(scope, receive, route, served)

    async def _predict(self, scope: dict, receive, route, served) -> bytes:
        self.registry.enter(served)
        submitted = False
        try:
            body = await read_body(scope, receive, self.limit)
            if len(body) > PARSE_IN_THREAD:
                parsed = await asyncio.to_thread(parse, body, served.inputs, served.others)
            else:
                parsed = parse(body, served.inputs, served.others)
            batcher = served.endpoints[parsed.signature].batcher
            if batcher is not served.batcher:  # expected by serving_default's batcher when it arrived
                served.batcher.give_up()
                batcher.expect()
            submitted = True
            try:
                outputs = await batcher.submit(parsed.inputs, parsed.rows, parsed.shapes)
            except Exception as exc:
                if not type(exc).__module__.startswith("tensorflow"):
                    raise
                log.warning("%s refused a request that passed the signature's checks: %s: %s", served.ref,
                            type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else "")
                raise RequestError(f"the model could not score this request ({type(exc).__name__}); the server's "
                                   "log has TensorFlow's reason") from None
            return responses.dumps(responses.predict(served, route, parsed, outputs))
        finally:
            if not submitted:
                served.batcher.give_up()
            self.registry.leave(served)


def build_app(registry: Registry):
    """The server's ASGI app: `/v1/models/…` to `ModelAPI`, everything else (and the lifespan) to Starlette."""
    metrics = registry.metrics

    def _json(body: dict, code: int = 200) -> Response:
        return Response(responses.dumps(body), status_code=code, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok", "models": {name: {r.label: r.current.version.label for r in routes}
                                                 for name, routes in registry.routes.items()}})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        return _json({"error": f"{exc.detail}: {request.method} {request.url.path[:100]}"}, exc.status_code)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await registry.start()
        try:
            yield
        finally:
            await registry.stop()

    rest = Starlette(routes=[Route("/healthz", healthz, methods=["GET"]), Route("/metrics", prometheus, methods=["GET"])],
                     exception_handlers={HTTPException: not_found}, lifespan=lifespan)
    models = ModelAPI(registry)

    async def app(scope: dict, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await models(scope, receive, send)
        else:
            await rest(scope, receive, send)

    return app
