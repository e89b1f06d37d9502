"""Alertmanager's webhook payload (version 4): what the monitor and the orchestrator receive."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

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
