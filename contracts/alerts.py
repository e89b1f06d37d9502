"""Alertmanager's webhook payload (version 4): what the monitor and the orchestrator receive."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

Status = Literal["firing", "resolved"]
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def _rfc3339(value: object) -> object:
    """Alertmanager's times are RFC 3339 strings: no Unix timestamps, no bare dates."""
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("an RFC 3339 date-time such as 2026-12-02T12:00:00Z")
    if not isinstance(value, str | datetime):
        raise ValueError("an RFC 3339 date-time string")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339)]


class _Payload(BaseModel):
    # Alertmanager's camelCase names (startsAt, groupLabels); unknown fields are ignored.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Alert(_Payload):
    status: Status
    labels: dict[str, str] = Field(
        description="at least `alertname`",
        json_schema_extra={
            "required": ["alertname"],
            "properties": {"alertname": {"type": "string", "minLength": 1}},
        },
    )
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: Timestamp | None = None
    ends_at: Timestamp | None = None
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
    truncated_alerts: int = Field(0, strict=True)  # JSON true is no count
    group_labels: dict[str, str] = Field(default_factory=dict)
    common_labels: dict[str, str] = Field(default_factory=dict)
    common_annotations: dict[str, str] = Field(default_factory=dict)
    external_url: str = Field("", alias="externalURL")
