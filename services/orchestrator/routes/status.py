"""The orchestrator's reads, open without a token: GET /retrainings (each model's state and recent
triggers), GET /metrics, GET /health."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.orchestrator.routes.deps import CoordinatorDep

router = APIRouter()


@router.get("/retrainings")
def retrainings(coordinator: CoordinatorDep) -> dict[str, object]:
    return coordinator.status()


@router.get(
    "/metrics", summary="Prometheus metrics (text exposition format)", response_class=PlainTextResponse
)
def metrics(coordinator: CoordinatorDep) -> Response:
    return Response(generate_latest(coordinator.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
