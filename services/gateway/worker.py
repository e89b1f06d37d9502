"""`python -m services.gateway worker`: one gateway process (uvicorn, one worker, one event loop).

Started by the supervisor (`python -m services.gateway`) on the sockets it owns: the public port
(GATEWAY_LISTEN_FD) and the metrics port (GATEWAY_METRICS_FD). It accepts connections only once
every model's version is loaded (or GATEWAY_READY_TIMEOUT_S passed), then writes `ready` on
GATEWAY_READY_FD. On SIGTERM uvicorn stops accepting, finishes the requests in flight (at most
GATEWAY_DRAIN_S), and the lifespan's shutdown writes the prediction log.

uvicorn picks uvloop and httptools when they are installed (loop="auto", http="auto") and falls back
to asyncio and h11 otherwise. One worker: the metrics, drift windows and remembered predictions live
in this process (no Prometheus multiprocess mode needed).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import uvicorn
from prometheus_client import CollectorRegistry, make_wsgi_app

from services.gateway import load_settings
from services.gateway.__main__ import LISTEN_FD, METRICS_FD, READY_FD, listen
from services.gateway.app import create_app
from services.gateway.logs import configure_logging


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


def inherited(name: str) -> socket.socket | None:
    fd = os.environ.get(name)
    return socket.socket(fileno=int(fd)) if fd else None


def main() -> int:
    configure_logging()
    settings = load_settings()
    if settings is None:
        return 1
    # The MLflow client retries a down tracking server for minutes by default; the poller retries
    # on its own schedule, so fail fast (an explicit environment setting still wins).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # The event loop shares the GIL with the recorder and log threads: when it wakes up it should
    # not wait the default 5 ms for a drift computation to yield.
    sys.setswitchinterval(0.0005)
    ready_fd = int(os.environ.pop(READY_FD, "-1"))
    app = create_app(settings, on_ready=lambda: _ready(ready_fd))
    # Run alone (no supervisor): listen here.
    listener = inherited(LISTEN_FD) or listen(settings.host, settings.port)
    metrics = inherited(METRICS_FD)
    if metrics is None and settings.metrics_port:
        metrics = listen(settings.host, settings.metrics_port)
    if metrics is not None:
        serve_metrics(metrics, app.scoring.metrics.registry)
    uvicorn.run(
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
    return 0


def _ready(fd: int) -> None:
    """Tell the supervisor this worker is about to accept (its models are loaded)."""
    if fd >= 0:
        try:
            os.write(fd, b"ready\n")
        finally:
            os.close(fd)
