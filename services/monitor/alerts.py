"""Alertmanager's webhook payload (version 4) and what the monitor does with each alert."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from services.monitor.metrics import MonitorMetrics

# One JSON object per line, without the usual log prefix (see __main__.configure_logging).
log = logging.getLogger("services.monitor.alerts")

Status = Literal["firing", "resolved"]


class _Payload(BaseModel):
    # Alertmanager's camelCase names (startsAt, groupLabels); unknown fields are ignored.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Alert(_Payload):
    status: Status
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = ""

    @field_validator("labels")
    @classmethod
    def has_alertname(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels.get("alertname"):
            raise ValueError("an alert needs the label `alertname`")
        return labels

    @property
    def alertname(self) -> str:
        return self.labels["alertname"]


class AlertmanagerWebhook(_Payload):
    """The body Alertmanager POSTs to a webhook receiver."""

    version: Literal["4"] = "4"
    status: Status
    alerts: list[Alert] = Field(min_length=1)
    receiver: str = ""
    group_key: str = ""
    truncated_alerts: int = 0
    group_labels: dict[str, str] = Field(default_factory=dict)
    common_labels: dict[str, str] = Field(default_factory=dict)
    common_annotations: dict[str, str] = Field(default_factory=dict)
    external_url: str = Field("", alias="externalURL")


def handle_alert(alert: Alert, metrics: MonitorMetrics) -> None:
    """React to one alert. For now: log it as one JSON line and count it.

    The place where a later issue triggers retraining (e.g. on `live_rmse_degraded`).
    """
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
