"""The gateway's reads for probes and Prometheus: GET /health (every model server answers and every
model is loaded) and GET /metrics (on this port only while no API keys are required)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from contracts.errors import error_body
from services.gateway.openapi import HealthAnswer
from services.gateway.routes.deps import ApiKeysDep, GatewayDep

router = APIRouter()


@router.get(
    "/health",
    summary="200 when every model server answers and every model is loaded",
    response_model=HealthAnswer,
    responses={503: {"model": HealthAnswer, "description": "degraded: see each model's ok"}},
)
async def health(gateway: GatewayDep) -> JSONResponse:
    healthy, detail = await gateway.health()
    return JSONResponse(
        {"status": "ok" if healthy else "degraded", "models": detail}, 200 if healthy else 503
    )


@router.get(
    "/metrics", summary="Prometheus metrics (text exposition format)", response_class=PlainTextResponse
)
async def metrics(gateway: GatewayDep, keys: ApiKeysDep) -> Response:
    if keys.required:  # published beyond loopback: Prometheus reads GATEWAY_METRICS_PORT
        message = "with API keys on, metrics are served on the internal metrics port only"
        return JSONResponse(error_body(404, message), 404)
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)
