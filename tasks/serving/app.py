"""The HTTP side: a Starlette app speaking TensorFlow Serving's REST API over a `Registry`.

    GET  /v1/models/NAME[/versions/N|/labels/L]             status (the versions answering, and those loading)
    GET  /v1/models/NAME[/versions/N|/labels/L]/metadata    the signature, and trainflow's columns and classes
    POST /v1/models/NAME[/versions/N|/labels/L]:predict     {"instances": [...]} or {"inputs": {...}}
    GET  /healthz                                           200 with what each label serves
    GET  /metrics                                           Prometheus's text format

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

PATH = re.compile(r"^(?P<name>[^/:]+)(?:/versions/(?P<version>\d{1,9})|/labels/(?P<label>[^/:]+))?"
                  r"(?P<tail>/metadata|:predict|:classify|:regress)?$")
APIS = {None: "status", "/metadata": "metadata", ":predict": "predict"}
#: Bodies larger than this are parsed in a worker thread, so a big request does not hold up the others.
PARSE_IN_THREAD = 256 * 1024


def _json(body: dict, code: int = 200, headers: Optional[dict] = None) -> Response:
    return Response(responses.dumps(body), status_code=code, media_type="application/json", headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or RequestError 413 past `limit` bytes. A body a little over is read to its end first (up to
    four times the limit), so the client, still sending, gets the answer rather than a broken connection."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > 4 * limit:
        raise RequestError(f"request body of {int(declared)} bytes is over this server's limit of {limit} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > 4 * limit:
            break
    if size > limit:
        raise RequestError(f"request body over this server's limit of {limit} bytes", 413)
    return b"".join(chunks)


def build_app(registry: Registry) -> Starlette:
    metrics, limit = registry.metrics, registry.settings.max_body_bytes

    async def models(request: Request) -> Response:
        started = time.perf_counter()
        match = PATH.match(request.path_params["rest"])
        api = APIS.get(match["tail"], "other") if match else "other"
        name = match["name"] if match else ""
        try:
            response = await _answer(request, match, api)
        except asyncio.CancelledError:
            raise
        except RequestError as exc:
            response = _json({"error": exc.message}, exc.status)
        except NotFound as exc:
            response = _json({"error": str(exc)}, 404)
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path[:200])
            response = _json({"error": "the server failed on this request (its log has the details)"}, 500)
        metrics.answered(name if name in registry.routes else "", api, response.status_code,
                         time.perf_counter() - started)
        return response

    async def _answer(request: Request, match: Optional[re.Match], api: str) -> Response:
        if match is None or api == "other":
            what = "classify and regress are not served; use :predict" if match else "no such API"
            raise NotFound(f"{what} (see GET /v1/models/NAME, …/metadata and POST …:predict)")
        version = int(match["version"]) if match["version"] else None
        wanted = "POST" if api == "predict" else "GET"
        if request.method != wanted:
            return _json({"error": f"{api} takes {wanted}, not {request.method}"}, 405, {"Allow": wanted})
        name, label = match["name"], match["label"]
        if api == "status":
            entries = registry.status(name, version, label)
            routes = [r for r in registry.routes[name] if label is None or r.label == label]
            return _json(responses.status(entries, routes))
        route, served = registry.find(name, version, label)
        if api == "metadata":
            return _json(responses.metadata(served, registry.routes[name]))
        return await _predict(request, route, served)

    async def _predict(request: Request, route, served) -> Response:
        registry.enter(served)
        submitted = False
        try:
            body = await read_body(request, limit)
            if len(body) > PARSE_IN_THREAD:
                parsed = await asyncio.to_thread(parse, body, served.inputs)
            else:
                parsed = parse(body, served.inputs)
            submitted = True
            try:
                outputs = await served.batcher.submit(parsed.inputs, parsed.rows, parsed.shapes)
            except Exception as exc:
                if not type(exc).__module__.startswith("tensorflow"):
                    raise
                log.warning("%s refused a request that passed the signature's checks: %s: %s", served.ref,
                            type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else "")
                raise RequestError(f"the model could not score this request ({type(exc).__name__}); the server's "
                                   "log has TensorFlow's reason") from None
            answer = responses.predict(served, route, parsed, outputs)
            return _json(answer)
        finally:
            if not submitted:
                served.batcher.give_up()
            registry.leave(served)

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

    return Starlette(routes=[Route("/v1/models/{rest:path}", models, methods=["GET", "POST", "PUT", "DELETE"]),
                             Route("/healthz", healthz, methods=["GET"]),
                             Route("/metrics", prometheus, methods=["GET"])],
                     exception_handlers={HTTPException: not_found}, lifespan=lifespan)
