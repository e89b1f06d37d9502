"""The monitor's HTTP app: its routes (`routes.py`: /metrics, /alerts, /health) with the state they
read, the guard and the error handlers. Errors are answered in the shape of contracts.errors (a
rejected webhook is logged as a warning). Between startup and shutdown the registry refresh and,
with a prediction log, the drift and quality windows run in the background."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from mlflow.tracking import MlflowClient

from contracts.errors import install_error_handlers
from contracts.guard import ControlToken, GuardMiddleware, allowed_hosts
from services.monitor import Settings
from services.monitor.metrics import MonitorMetrics
from services.monitor.registry import Refresher
from services.monitor.routes import router
from services.monitor.schedule import Periodic
from services.monitor.windows import WindowMonitor


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the background tasks (`app.state.tasks`) between startup and shutdown."""
    tasks: list[Periodic] = app.state.tasks
    for task in tasks:
        task.start()
    yield
    for task in tasks:
        task.stop()


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

    app = FastAPI(title="mlops monitor", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.control_token, app.state.metrics, app.state.tasks = token, metrics, tasks
    app.include_router(router)
    install_error_handlers(app, rejected_level=logging.WARNING)
    app.add_middleware(
        GuardMiddleware, allowed=allowed_hosts(["monitor"], settings.guard.extra_allowed_hosts)
    )
    return app
