"""Online prediction: `trainflow serve-model`'s server with batching on and off, beside a bare Starlette handler
that calls the same SavedModel, at 1, 8 and 64 concurrent clients.

A table model as a user gets it from the least spec (the table defaults: an MLP [256, 128] over 5 raw columns,
numbers and text, classification) is trained briefly with the project's own code and laid out as a published
version. Each server runs in a process of its own (TensorFlow imported, the model loaded, a warm-up call made
before the clock starts); the three run at once, and only the one being measured gets requests. The clients are
one asyncio process of raw HTTP/1.1 keep-alive connections (a few microseconds per request, so they measure the
server, not a client library). Every request is one row in TF Serving's row format, `{"instances": [{...}]}`,
drawn from 256 distinct rows; every answer is checked to be a 200.

The machine is shared, and its speed drifts by tens of percent from one minute to the next, so the servers are
measured in turn, `ROUNDS` times: each round runs every server at 1, 8 and 64 clients for `SECONDS` after a
warm-up of its own. requests/s counts answers in that window (the table shows the median round); latencies are
every round's requests, from write to last byte read; the goals' ratios are also given round by round.
Requests per model call (the mean batch, warm-up included) come from the server's own `/metrics`.

- bare: the handler a person writes by hand (`await request.body()`, `orjson.loads`, one `tf.constant` per
  column, the signature called in Starlette's thread pool, `orjson.dumps`): no input checks, no batching.
- on: `serve-model`'s defaults (`--max-batch 64 --batch-timeout-ms 2`).
- off: `--max-batch 1`, one request per model call, everything else the same.

Goals (issue 30): batching on gives at least 5x the requests/s of batching off at 64 clients; single-client
p50 at most 1.5x the bare handler.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (sets up sys.path and env)
from common import table, write_section

CLIENTS = (1, 8, 64)
MODES = ("bare", "on", "off")
ROUNDS = 3  # each round measures every server at every client count, so a slow minute of a shared machine
SECONDS = 2.0  # falls on all three alike; the table shows per-setting medians over the rounds
WARM_UP = 0.5
ROWS = 256


def publish(folder: Path) -> Path:
    """The least table spec's model (the table defaults), trained briefly, as a version of an artifact root."""
    from predict_memory import publish as trained
    from tasks.publish.store import file_hashes

    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    version = trained(folder / "artifacts", model=None, epochs=3)
    (version / "manifest.json").write_text(json.dumps({"files": file_hashes(version)}))  # what loaders check
    rows = [{k: _plain(v) for k, v in row.items() if k != "churned"} for row in _rows(ROWS)]
    (folder / "rows.json").write_text(json.dumps(rows))
    return version


def _plain(value):
    """A cell as a client sends it to the signature: numbers as numbers, text as text, true/false as the model's
    text ('True', as training read such cells), so the bare handler can take it too."""
    value = value.item() if hasattr(value, "item") else value
    return str(value) if isinstance(value, bool) else value


def _rows(count: int) -> list[dict]:
    from predict_memory import columns

    data = columns(count, 7)
    return [{k: data[k][i] for k in data} for i in range(count)]


def bare(folder: Path) -> None:
    """The hand-written handler, listening on the port it prints."""
    import numpy as np  # noqa: F401
    import orjson
    import tensorflow as tf
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response
    from starlette.routing import Route

    from tasks.serving.server import address, bind

    signature = tf.saved_model.load(str(folder / "artifacts" / "bench" / "v0001" / "checkpoint" / "saved_model")
                                    ).signatures["serving_default"]
    _, specs = signature.structured_input_signature

    def call(rows):
        fed = {key: tf.constant([row[key] for row in rows], dtype=spec.dtype) for key, spec in specs.items()}
        return {key: value.numpy() for key, value in signature(**fed).items()}

    call(json.loads((folder / "rows.json").read_text())[:1])

    async def predict(request):
        out = await run_in_threadpool(call, orjson.loads(await request.body())["instances"])
        rows = [dict(zip(out, values)) for values in zip(*out.values())]
        return Response(orjson.dumps({"predictions": rows}, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

    sock = bind("127.0.0.1", 0)
    print(address(sock), flush=True)
    app = Starlette(routes=[Route("/v1/models/bench:predict", predict, methods=["POST"])])
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


def start(folder: Path, mode: str) -> tuple[subprocess.Popen, str]:
    if mode == "bare":
        command = [sys.executable, __file__, "bare", str(folder)]
    else:
        command = [*common.TRAINFLOW, "serve-model", "bench@v1", "--port", "0", "--artifacts",
                   str(folder / "artifacts"), "--max-batch", "64" if mode == "on" else "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        process.kill()
        raise SystemExit(f"the {mode} server did not start")
    return process, url


async def _client(port: int, requests: list[bytes], until: float, since: float, latencies: list, errors: list,
                  offset: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    while True:
        sent = time.perf_counter()
        if sent >= until:
            break
        writer.write(requests[i % len(requests)])
        i += 1
        head = await reader.readuntil(b"\r\n\r\n")
        start = head.lower().index(b"content-length:") + 15
        await reader.readexactly(int(head[start:head.index(b"\r\n", start)]))
        answered = time.perf_counter()
        if not head.startswith(b"HTTP/1.1 200"):
            errors.append(head[:40])
        if sent >= since:
            latencies.append(answered - sent)
    writer.close()


async def _load(port: int, requests: list[bytes], clients: int, warm_up: float = WARM_UP) -> dict:
    latencies, errors = [], []
    begin = time.perf_counter()
    since, until = begin + warm_up, begin + warm_up + SECONDS
    await asyncio.gather(*(_client(port, requests, until, since, latencies, errors, n * 7) for n in range(clients)))
    return {"rps": len(latencies) / SECONDS, "latencies": latencies, "errors": len(errors)}


def _summary(runs: list[dict]) -> dict:
    """One setting over the rounds: the median round's requests/s, percentiles of every round's latencies."""
    latencies = sorted(x for run in runs for x in run["latencies"])
    calls = [run["batch"] for run in runs if run["batch"] is not None]
    return {"rps": statistics.median(run["rps"] for run in runs), "p50": latencies[len(latencies) // 2] * 1e3,
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
            "errors": sum(run["errors"] for run in runs), "batch": statistics.mean(calls) if calls else None}


def batched(port: int) -> tuple[float, float]:
    """The server's count of requests answered by model calls, and of calls (`/metrics`), to take mean batch sizes
    from (the bare handler has no /metrics: zeros)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    if response.status != 200:
        return 0.0, 0.0
    found = {}
    for line in text.splitlines():
        for field in ("sum", "count"):
            if line.startswith(f"trainflow_serving_batch_requests_{field}{{"):
                found[field] = found.get(field, 0.0) + float(line.rsplit(" ", 1)[1])
    return found.get("sum", 0.0), found.get("count", 0.0)


def requests_for(folder: Path, path: str) -> list[bytes]:
    out = []
    for row in json.loads((folder / "rows.json").read_text()):
        body = json.dumps({"instances": [row]}).encode()
        out.append(f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return out


def main() -> None:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="trainflow-serving-") as tmp:
        folder = Path(tmp)
        subprocess.run([sys.executable, __file__, "publish", str(folder)], check=True, stdout=subprocess.DEVNULL)
        requests = requests_for(folder, "/v1/models/bench:predict")
        runs: dict[tuple, list[dict]] = {(mode, clients): [] for mode in MODES for clients in CLIENTS}
        servers = {}
        try:
            for mode in MODES:
                servers[mode] = start(folder, mode)
            ports = {mode: int(url.rsplit(":", 1)[1]) for mode, (_, url) in servers.items()}
            for mode in MODES:  # every server warm before the first round
                asyncio.run(_load(ports[mode], requests, 8, warm_up=1.0))
            for round_ in range(ROUNDS):
                for clients in CLIENTS:
                    for mode in MODES:
                        before = batched(ports[mode])
                        run = asyncio.run(_load(ports[mode], requests, clients))
                        after = batched(ports[mode])
                        calls = after[1] - before[1]
                        run["batch"] = (after[0] - before[0]) / calls if calls else None
                        runs[mode, clients].append(run)
                        print(round_ + 1, mode, clients, f"{run['rps']:.0f} rps", flush=True)
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(30)
        results = {key: _summary(value) for key, value in runs.items()}
        speedups = [on["rps"] / off["rps"] for on, off in zip(runs["on", 64], runs["off", 64])]
        singles = [statistics.median(on["latencies"]) / statistics.median(bare["latencies"])
                   for on, bare in zip(runs["on", 1], runs["bare", 1])]
    rows = [[mode, clients, f"{r['rps']:,.0f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}",
             "-" if r["batch"] is None else f"{r['batch']:.1f}", r["errors"]]
            for (mode, clients), r in results.items()]
    speedup = results["on", 64]["rps"] / results["off", 64]["rps"]
    single = results["on", 1]["p50"] / results["bare", 1]["p50"]
    body = table(["server", "clients", "requests/s", "p50 ms", "p99 ms", "requests per model call", "errors"], rows)
    body += (f"\n\nBatching on gives **{speedup:.2f}x** the requests/s of batching off at 64 clients (goal: at least "
             f"5x: {'met' if speedup >= 5 else '**not met**'}); against the bare handler at 64 clients "
             f"{results['on', 64]['rps'] / results['bare', 64]['rps']:.2f}x. Single-client p50 is **{single:.2f}x** the "
             f"bare handler's (goal: at most 1.5x: {'met' if single <= 1.5 else '**not met**'}). Round by round the two "
             f"ratios were {', '.join(f'{x:.2f}x' for x in speedups)} and {', '.join(f'{x:.2f}x' for x in singles)}. "
             f"One row per request; {ROUNDS} rounds, each measuring every server at 1, 8 and 64 clients in turn for "
             f"{SECONDS:g} s after a {WARM_UP:g} s warm-up (requests/s: the median round; latencies: every round's "
             f"requests); the three servers run at once, idle but for the one measured; servers and clients share the machine's "
             f"{os.cpu_count()} cores (the clients are one asyncio process); load average {load:.2f} before and "
             f"{os.getloadavg()[0]:.2f} after (other sessions share the machine). bare: a hand-written Starlette handler "
             f"calling the same SavedModel in Starlette's thread pool, without input checks; on: `serve-model`'s "
             f"defaults (`--max-batch 64 --batch-timeout-ms 2`); off: `--max-batch 1`.")
    write_section("Online serving", body)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "publish":
        print(publish(Path(sys.argv[2])))
    elif command == "bare":
        bare(Path(sys.argv[2]))
    else:
        main()
