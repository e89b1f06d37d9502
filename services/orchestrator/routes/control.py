"""The routes that change something, each behind the platform's control token (checked before the
body or the model is looked at): POST /alerts (Alertmanager), POST /retrain, POST /rollback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from contracts.alerts import AlertmanagerWebhook
from contracts.errors import body_errors
from contracts.guard import CONTROL_ERRORS, control_auth
from contracts.models import MODEL_NAMES
from services.orchestrator.coordinator import Trigger, plain_candidates
from services.orchestrator.routes.deps import CoordinatorDep, SettingsDep, known

router = APIRouter(dependencies=[Depends(control_auth())])

# A candidate name becomes a trainer parameter: a plain ASCII name (runner.PLAIN_VALUE, without commas).
Candidate = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/@+=-]{1,300}$", examples=["random-forest"])]
ModelName = Annotated[
    str, Field(description="a registered model (contracts/models.py)", examples=list(MODEL_NAMES))
]
UNKNOWN = {**CONTROL_ERRORS, 404: "unknown model (the message names the known ones)"}


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


@router.post(
    "/alerts",
    summary="Alertmanager's webhook (control token required)",
    responses=body_errors(CONTROL_ERRORS),
)
def alerts(
    payload: AlertmanagerWebhook, coordinator: CoordinatorDep, settings: SettingsDep
) -> dict[str, list[dict[str, str]]]:
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
            Trigger(f"alert:{alert.alertname}", alert.annotations.get("summary", ""), since=alert.starts_at),
        )
        results.append({"model": model, "trigger": trigger.kind, "result": trigger.result})
    return {"triggers": results}


@router.post(
    "/retrain",
    status_code=202,
    summary="Retrain a model now (control token required)",
    responses=body_errors({**UNKNOWN, 409: "the model is being retrained or watched: recorded, not queued"}),
)
def retrain(request: RetrainRequest, coordinator: CoordinatorDep) -> dict[str, str]:
    """On demand (`make retrain`): started, or 409 while the model is being retrained or watched."""
    try:
        candidates = plain_candidates(request.candidates)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    trigger = coordinator.trigger(
        known(coordinator, request.model),
        Trigger("manual", request.reason or "on demand", automatic=False, candidates=candidates),
    )
    if trigger.result != "started":
        raise HTTPException(409, f"{request.model} is {trigger.result}: the request was recorded, not queued")
    return {"model": request.model, "result": trigger.result}


@router.post(
    "/rollback",
    summary="Production back to the version the current one replaced (control token required)",
    responses=body_errors({**UNKNOWN, 409: "nothing to roll back to, or production moved meanwhile"}),
)
def rollback(request: RollbackRequest, coordinator: CoordinatorDep) -> dict[str, str]:
    """`make rollback`: production back to the version the current one replaced."""
    try:
        return coordinator.rollback(known(coordinator, request.model), request.reason)
    except LookupError as exc:
        raise HTTPException(409, str(exc)) from None
