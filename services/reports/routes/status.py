"""The reports service's reads for machines: GET /metrics (the leaderboard's gauges), GET /health."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.reports.routes.deps import RegistryDep

router = APIRouter()


@router.get("/metrics", summary="Prometheus gauges of the leaderboard", response_class=PlainTextResponse)
def metrics(registry: RegistryDep) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/health", summary="Liveness")
def health() -> dict[str, str]:
    return {"status": "ok"}
