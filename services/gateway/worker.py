"""`python -m services.gateway worker`: one gateway process (uvicorn, one worker, one event loop).

Started by the supervisor (`python -m services.gateway`) on the sockets it owns: the public port
(GATEWAY_LISTEN_FD) and the metrics port (GATEWAY_METRICS_FD). It accepts connections only once
every model's version is loaded (or GATEWAY_READY_TIMEOUT_S passed), then writes `ready` on
GATEWAY_READY_FD. On SIGTERM it stops accepting and drains (`Server.shutdown`): first a lame-duck
phase, then uvicorn finishes the requests in flight (at most GATEWAY_DRAIN_S), and the lifespan's
shutdown writes the prediction log.

uvicorn picks uvloop and httptools when they are installed (loop="auto", http="auto") and falls back
to asyncio and h11 otherwise. One worker per process: its metrics live in this process (no
Prometheus multiprocess mode needed); more throughput comes from more replicas.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import uvicorn
from prometheus_client import CollectorRegistry, make_wsgi_app

from contracts.logs import configure_logging
from services.common.sockets import listen
from services.gateway import load_settings
from services.gateway.app import create_app
from services.gateway.handover import LISTEN_FD, METRICS_FD, READY_FD
from services.gateway.scoring import ScoringFastPath


class _MetricsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
        pass


def serve_metrics(listener: socket.socket, registry: CollectorRegistry) -> None:
    """Prometheus's /metrics on an inherited listening socket, in a daemon thread."""
    server = _MetricsServer(listener.getsockname()[:2], _Quiet, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    host, port = listener.getsockname()[:2]
    server.server_name, server.server_port = host, port
    server.setup_environ()
    server.set_app(make_wsgi_app(registry))
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()


class Server(uvicorn.Server):
    """uvicorn, whose shutdown starts with a lame-duck phase.

    uvicorn's own shutdown closes idle keep-alive connections at once. A client that sent its next
    request on one at that moment loses it (the connection is reset before any answer): that was
    the one request a reload under traffic could lose. So this worker first stops accepting (the
    next worker, after a reload, takes new connections), then keeps answering on the connections it
    has, each answer with `Connection: close`, until its clients have all gone or LAME_DUCK_S
    passed. Only then does uvicorn's shutdown run, on whatever connection is still idle."""

    LAME_DUCK_S = 2.0

    def __init__(self, config: uvicorn.Config, app: ScoringFastPath, drain_s: float) -> None:
        super().__init__(config)
        self.app, self.lame_duck_s = app, min(self.LAME_DUCK_S, drain_s)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        self.app.closing = True
        deadline = time.monotonic() + self.lame_duck_s
        while self.server_state.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await super().shutdown(sockets)


def inherited(name: str) -> socket.socket | None:
    fd = os.environ.get(name)
    return socket.socket(fileno=int(fd)) if fd else None


def main() -> int:
    configure_logging("gateway")
    settings = load_settings()
    if settings is None:
        return 1
    # The MLflow client retries a down tracking server for minutes by default; the poller retries
    # on its own schedule, so fail fast (an explicit environment setting still wins).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    ready_fd = int(os.environ.pop(READY_FD, "-1"))
    app = create_app(settings, on_ready=lambda: _ready(ready_fd))
    # Run alone (no supervisor): listen here.
    listener = inherited(LISTEN_FD) or listen(settings.host, settings.port)
    metrics = inherited(METRICS_FD)
    if metrics is None and settings.metrics_port:
        metrics = listen(settings.host, settings.metrics_port)
    if metrics is not None:
        serve_metrics(metrics, app.scoring.metrics.registry)
    config = uvicorn.Config(
        app,
        fd=listener.fileno(),
        workers=1,
        loop="auto",
        http="auto",
        access_log=settings.access_log,
        proxy_headers=False,  # nothing sits in front of the gateway; saves a middleware per request
        log_config=None,
        timeout_graceful_shutdown=int(settings.drain_s),
    )
    Server(config, app, settings.drain_s).run()
    return 0


def _ready(fd: int) -> None:
    """Tell the supervisor this worker is about to accept (its models are loaded)."""
    if fd >= 0:
        try:
            os.write(fd, b"ready\n")
        finally:
            os.close(fd)
