"""The orchestrator's HTTP app: its routes (`routes/control.py`: /alerts from Alertmanager, /retrain
and /rollback on demand, which need the platform's control token; `routes/status.py`: /retrainings,
/metrics, /health) with the coordinator they act on, the guard and the error handlers; and the cron
schedule that runs beside them."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from apscheduler.triggers.cron import CronTrigger
from fastapi import FastAPI

from contracts.errors import install_error_handlers
from contracts.guard import ControlToken, GuardMiddleware, allowed_hosts
from services.orchestrator import Settings
from services.orchestrator.coordinator import Coordinator, Trigger
from services.orchestrator.routes import control, status

log = logging.getLogger(__name__)


def schedule(expression: str) -> CronTrigger | None:
    """The cron schedule, or None when off; ValueError naming the expression when malformed."""
    if not expression.strip():
        return None
    try:
        return CronTrigger.from_crontab(expression, timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"RETRAIN_SCHEDULE {expression!r} is not a cron expression: {exc}") from None


def run_schedule(coordinator: Coordinator, cron: CronTrigger, stopping: threading.Event) -> None:
    """Trigger every model at each fire time of `cron` until `stopping` is set."""
    while not stopping.is_set():
        now = datetime.now(UTC)
        fire = cron.get_next_fire_time(None, now)
        if fire is None or stopping.wait((fire - now).total_seconds()):
            return
        for model in coordinator.states:
            coordinator.trigger(model, Trigger("schedule", f"cron {coordinator.settings.retrain.schedule}"))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Poll the registry, and run the schedule (`app.state.cron`, None when off), until shutdown."""
    coordinator: Coordinator = app.state.coordinator
    coordinator.start_polling()
    if app.state.cron is not None:
        threading.Thread(
            target=run_schedule, args=(coordinator, app.state.cron, coordinator.stopping), daemon=True
        ).start()
    yield
    coordinator.stopping.set()


def create_app(settings: Settings, coordinator: Coordinator) -> FastAPI:
    """The app; ValueError for a malformed schedule or an unreadable control token."""
    cron = schedule(settings.retrain.schedule)
    token = ControlToken(settings.control.control_token_file)
    token.current()
    app = FastAPI(title="mlops orchestrator", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.coordinator, app.state.cron, app.state.control_token = coordinator, cron, token
    app.include_router(control.router)
    app.include_router(status.router)
    install_error_handlers(app, rejected_level=logging.WARNING)
    app.add_middleware(
        GuardMiddleware, allowed=allowed_hosts(["orchestrator"], settings.guard.extra_allowed_hosts)
    )
    return app
