"""What the monitor does with each alert Alertmanager sends (payload: contracts.alerts)."""

from __future__ import annotations

import logging

from contracts.alerts import Alert
from services.monitor.metrics import MonitorMetrics

# One log line per alert, its fields as the line's JSON keys (contracts.logs).
log = logging.getLogger("services.monitor.alerts")


def handle_alert(alert: Alert, metrics: MonitorMetrics) -> None:
    """React to one alert: log it as one JSON line and count it (the orchestrator, the other
    receiver, retrains on drift and quality alerts)."""
    metrics.alerts_received.labels(alertname=alert.alertname, status=alert.status).inc()
    fields = {
        "event": "alert",
        "alertname": alert.alertname,
        "status": alert.status,
        "severity": alert.labels.get("severity", ""),
        "model": alert.labels.get("model", ""),
        "labels": alert.labels,
        "annotations": alert.annotations,
        "starts_at": alert.starts_at.isoformat() if alert.starts_at else None,
        "ends_at": alert.ends_at.isoformat() if alert.ends_at else None,
        "fingerprint": alert.fingerprint,
    }
    log.info("alert %s %s", alert.alertname, alert.status, extra=fields)
