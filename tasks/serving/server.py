"""Running the app: `serve` blocks until SIGINT or SIGTERM (the CLI), `Background` runs it in a thread of this
process on a free port (tests, benchmarks, notebooks).

Every reference is resolved, loaded and checked before the server listens, so a name that does not exist or a
damaged version is a one-line error at start, never a server answering 404s. The socket is bound and listening
before uvicorn starts, so the address printed is one that already accepts connections (they wait in the
backlog for the few milliseconds uvicorn takes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import uvicorn

from tasks.serving.app import build_app
from tasks.serving.registry import Registry, ServeError
from tasks.serving.settings import DEFAULT_HOST, DEFAULT_PORT, Settings

log = logging.getLogger("trainflow.serving")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one); ServeError when the address cannot be had."""
    try:
        family, kind, proto, _, _ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and without it every answer
        # waited ~40 ms for the client's delayed ACK (measured: 44 ms per /healthz)
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, stopping cleanly on SIGINT or SIGTERM without re-raising the signal afterwards (uvicorn's
    own handling ends the process by the signal, an exit code a supervisor reads as a crash)."""

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum, frame):
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


#: Every server this process runs, newest last, so code that started one in another thread (a flow run, a
#: notebook) can find its address and stop it (`server.should_exit = True`; it finishes the requests it holds).
RUNNING: list[_Server] = []


def _server(registry: Registry) -> _Server:
    config = uvicorn.Config(build_app(registry), log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=10, log_config=None)
    return _Server(config)


def _run(server: _Server, sock: socket.socket) -> None:
    RUNNING.append(server)
    try:
        server.run(sockets=[sock])
    finally:
        RUNNING.remove(server)



def identity(sock: socket.socket) -> str:
    return f"server {address(sock).removeprefix('http://')} (pid {os.getpid()})"


def serve(root: Path, refs: list[str], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, settings: Settings = Settings(),
          ready: Optional[Callable[[Registry, str], None]] = None, who: str = "") -> None:
    """Serve `refs` (NAME, NAME@vN, NAME@ALIAS) from the artifact root until SIGINT or SIGTERM. ServeError before
    listening when a reference cannot be served or the address cannot be had. `who` is added to the server's name
    in the alias history (e.g. its flow run)."""
    sock = bind(host, port)
    registry = Registry(root, refs, settings, by=identity(sock) + who)
    try:
        registry.load()
    except BaseException:
        sock.close()
        raise
    if ready is not None:
        ready(registry, address(sock))
    _run(_server(registry), sock)


class Background:
    """The server in a thread of this process, on a free port of `host`: `with Background(root, refs) as url:`."""

    def __init__(self, root: Path, refs: list[str], settings: Settings = Settings(), host: str = DEFAULT_HOST):
        self.sock = bind(host, 0)
        self.url = address(self.sock)
        self.registry = Registry(root, refs, settings, by=identity(self.sock))
        self.registry.load()
        self.server = _server(self.registry)
        self.thread = threading.Thread(target=_run, args=(self.server, self.sock), name="trainflow-serve-model",
                                       daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ServeError("the server did not start")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
