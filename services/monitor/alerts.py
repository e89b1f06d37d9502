"""What the monitor does with each alert Alertmanager sends (payload: contracts.alerts)."""

from __future__ import annotations

import json
import logging

from contracts.alerts import Alert
from services.monitor.metrics import MonitorMetrics

# One JSON object per line, without the usual log prefix (see __main__.configure_logging).
log = logging.getLogger("services.monitor.alerts")


def handle_alert(alert: Alert, metrics: MonitorMetrics) -> None:
    """React to one alert: log it as one JSON line and count it (the orchestrator, the other
    receiver, retrains on drift and quality alerts)."""
    metrics.alerts_received.labels(alertname=alert.alertname, status=alert.status).inc()
    record = {
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
    log.info(json.dumps(record, ensure_ascii=False))
