"""The monitor's routes: GET /metrics, POST /alerts (Alertmanager's webhook, control token required),
GET /health. What they need comes from the app's state through `Depends` (`create_app` puts it
there), so a test can mount `router` on a bare app and give it its own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from contracts.alerts import AlertmanagerWebhook
from contracts.errors import body_errors
from contracts.guard import CONTROL_ERRORS, control_auth
from services.monitor.alerts import handle_alert
from services.monitor.metrics import MonitorMetrics

router = APIRouter()


async def get_metrics(request: Request) -> MonitorMetrics:
    """The monitor's metrics, `app.state.metrics` (async: an attribute read needs no thread)."""
    metrics: MonitorMetrics = request.app.state.metrics
    return metrics


MetricsDep = Annotated[MonitorMetrics, Depends(get_metrics)]


@router.get(
    "/metrics", summary="Prometheus metrics (text exposition format)", response_class=PlainTextResponse
)
def prometheus_metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post(
    "/alerts",
    summary="Alertmanager's webhook (control token required)",
    responses=body_errors(CONTROL_ERRORS),
    dependencies=[Depends(control_auth())],
)
def alerts(payload: AlertmanagerWebhook, metrics: MetricsDep) -> dict[str, int]:
    for alert in payload.alerts:
        handle_alert(alert, metrics)
    return {"received": len(payload.alerts)}


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
