"""The monitor's HTTP API: /metrics, /alerts (Alertmanager webhook), /health. Errors are answered in
the shape of contracts.errors (a rejected webhook is logged as a warning). Between startup and
shutdown the registry refresh and, with a prediction log, the drift and quality windows run in the
background."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Response
from fastapi.responses import PlainTextResponse
from mlflow.tracking import MlflowClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from contracts.alerts import AlertmanagerWebhook
from contracts.errors import body_errors, install_error_handlers
from contracts.guard import CONTROL_ERRORS, ControlToken, GuardMiddleware, allowed_hosts, control_auth
from services.monitor import Settings
from services.monitor.alerts import handle_alert
from services.monitor.metrics import MonitorMetrics
from services.monitor.registry import Refresher
from services.monitor.schedule import Periodic
from services.monitor.windows import WindowMonitor

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """The app; the registry refresh (and, with MONITORING_DB_URI, drift and live quality) run in the
    background between startup and shutdown. ValueError when the control token cannot be read."""
    token = ControlToken(settings.control.control_token_file)
    token.current()
    metrics = MonitorMetrics.create()
    tasks: list[Periodic] = [
        Refresher(
            MlflowClient(settings.mlflow.tracking_uri),
            settings.models,
            settings.aliases,
            metrics,
            settings.refresh_s,
        )
    ]
    if settings.monitoring.db_uri:
        tasks.append(
            WindowMonitor(settings, MlflowClient(settings.mlflow.tracking_uri), metrics, settings.models)
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for task in tasks:
            task.start()
        yield
        for task in tasks:
            task.stop()

    app = FastAPI(title="mlops monitor", lifespan=lifespan, docs_url=None, redoc_url=None)

    install_error_handlers(app, rejected_level=logging.WARNING)
    app.add_middleware(
        GuardMiddleware, allowed=allowed_hosts(["monitor"], settings.guard.extra_allowed_hosts)
    )

    @app.get(
        "/metrics", summary="Prometheus metrics (text exposition format)", response_class=PlainTextResponse
    )
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/alerts",
        summary="Alertmanager's webhook (control token required)",
        responses=body_errors(CONTROL_ERRORS),
        dependencies=[Depends(control_auth(token))],
    )
    def alerts(payload: AlertmanagerWebhook) -> dict[str, int]:
        for alert in payload.alerts:
            handle_alert(alert, metrics)
        return {"received": len(payload.alerts)}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
