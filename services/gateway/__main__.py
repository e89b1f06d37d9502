"""`python -m services.gateway`: serve the gateway with uvicorn (one worker, one event loop).

uvicorn picks uvloop and httptools when they are installed (loop="auto", http="auto") and falls back
to asyncio and h11 otherwise. One worker: the metrics, drift windows and remembered predictions live
in this process (no Prometheus multiprocess mode needed).
"""

from __future__ import annotations

import os
import sys

import uvicorn
from prometheus_client import start_http_server
from pydantic import ValidationError

from contracts.settings import settings_problems
from services.gateway import Settings
from services.gateway.app import create_app
from services.gateway.logs import configure_logging


def main() -> int:
    configure_logging()
    try:
        settings = Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        print(f"gateway: error: invalid settings: {settings_problems(exc)}", file=sys.stderr)
        return 1
    # The MLflow client retries a down tracking server for minutes by default; the poller retries
    # on its own schedule, so fail fast (an explicit environment setting still wins).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # The event loop shares the GIL with the recorder and log threads: when it wakes up it should
    # not wait the default 5 ms for a drift computation to yield.
    sys.setswitchinterval(0.0005)
    app = create_app(settings)
    if settings.metrics_port:  # Prometheus's own port, on the internal network only
        start_http_server(settings.metrics_port, settings.host, app.scoring.metrics.registry)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        loop="auto",
        http="auto",
        access_log=settings.access_log,
        proxy_headers=False,  # nothing sits in front of the gateway; saves a middleware per request
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
