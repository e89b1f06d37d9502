"""The orchestrator's HTTP API: /alerts (Alertmanager), /retrain and /rollback (on demand), which
need the platform's control token; /retrainings (state and recent triggers), /health, /metrics."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

from apscheduler.triggers.cron import CronTrigger
from fastapi import Depends, FastAPI, HTTPException, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from contracts.alerts import AlertmanagerWebhook
from contracts.errors import body_errors, install_error_handlers
from contracts.guard import CONTROL_ERRORS, ControlToken, GuardMiddleware, allowed_hosts, control_auth
from contracts.models import MODEL_NAMES
from services.orchestrator import Settings
from services.orchestrator.coordinator import Coordinator, Trigger, plain_candidates

log = logging.getLogger(__name__)

# A candidate name becomes a trainer parameter: a plain ASCII name (runner.PLAIN_VALUE, without commas).
Candidate = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/@+=-]{1,300}$", examples=["random-forest"])]
ModelName = Annotated[
    str, Field(description="a registered model (contracts/models.py)", examples=list(MODEL_NAMES))
]


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    reason: str = Field("", max_length=500, description="recorded on the retraining run")
    candidates: list[Candidate] = Field(
        default_factory=list,
        max_length=5,
        description="trainer candidates (default RETRAIN_CANDIDATES), e.g. random-forest",
    )


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    reason: str = Field("manual rollback", max_length=500)


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


def create_app(settings: Settings, coordinator: Coordinator) -> FastAPI:
    """The app; ValueError for a malformed schedule or an unreadable control token."""
    cron = schedule(settings.retrain.schedule)
    token = ControlToken(settings.control.control_token_file)
    token.current()
    # Every route that changes something: the token first, before the body or the model is looked at.
    control = [Depends(control_auth(token))]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        coordinator.start_polling()
        if cron is not None:
            threading.Thread(
                target=run_schedule, args=(coordinator, cron, coordinator.stopping), daemon=True
            ).start()
        yield
        coordinator.stopping.set()

    app = FastAPI(title="mlops orchestrator", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app, rejected_level=logging.WARNING)
    app.add_middleware(
        GuardMiddleware, allowed=allowed_hosts(["orchestrator"], settings.guard.extra_allowed_hosts)
    )
    unknown = {**CONTROL_ERRORS, 404: "unknown model (the message names the known ones)"}

    def known(model: str) -> str:
        if model not in coordinator.states:
            raise HTTPException(404, f"unknown model {model!r}: one of {', '.join(coordinator.states)}")
        return model

    @app.post(
        "/alerts",
        summary="Alertmanager's webhook (control token required)",
        responses=body_errors(CONTROL_ERRORS),
        dependencies=control,
    )
    def alerts(payload: AlertmanagerWebhook) -> dict[str, list[dict[str, str]]]:
        """Alertmanager's webhook: a firing retraining alert of a known model triggers a retraining."""
        results = []
        for alert in payload.alerts:
            model = alert.labels.get("model", "")
            if (
                alert.status != "firing"
                or alert.alertname not in settings.retrain.on_alerts
                or model not in coordinator.states
            ):
                continue
            trigger = coordinator.trigger(
                model,
                Trigger(
                    f"alert:{alert.alertname}",
                    alert.annotations.get("summary", ""),
                    since=alert.starts_at,
                ),
            )
            results.append({"model": model, "trigger": trigger.kind, "result": trigger.result})
        return {"triggers": results}

    @app.post(
        "/retrain",
        status_code=202,
        summary="Retrain a model now (control token required)",
        dependencies=control,
        responses=body_errors(
            {**unknown, 409: "the model is being retrained or watched: recorded, not queued"}
        ),
    )
    def retrain(request: RetrainRequest, response: Response) -> dict[str, str]:
        """On demand (`make retrain`): started, or 409 while the model is being retrained or watched."""
        try:
            candidates = plain_candidates(request.candidates)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        trigger = coordinator.trigger(
            known(request.model),
            Trigger("manual", request.reason or "on demand", automatic=False, candidates=candidates),
        )
        if trigger.result != "started":
            raise HTTPException(
                409, f"{request.model} is {trigger.result}: the request was recorded, not queued"
            )
        return {"model": request.model, "result": trigger.result}

    @app.post(
        "/rollback",
        summary="Production back to the version the current one replaced (control token required)",
        dependencies=control,
        responses=body_errors({**unknown, 409: "nothing to roll back to, or production moved meanwhile"}),
    )
    def rollback(request: RollbackRequest) -> dict[str, str]:
        """`make rollback`: production back to the version the current one replaced."""
        try:
            return coordinator.rollback(known(request.model), request.reason)
        except LookupError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.get("/retrainings")
    def retrainings() -> dict[str, object]:
        return coordinator.status()

    @app.get(
        "/metrics", summary="Prometheus metrics (text exposition format)", response_class=PlainTextResponse
    )
    def metrics() -> Response:
        return Response(generate_latest(coordinator.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
