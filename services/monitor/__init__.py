"""Model monitor: the registry's training-time test metrics for Prometheus, and Alertmanager's webhook.

`GET /metrics` exports `mlops_model_test_metric{model,alias,version,metric}` for the version behind
each alias, read from the tracking server in the background; `POST /alerts` receives Alertmanager's
notifications (docs/monitoring.md, "Monitor metrics").
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode


class Settings(BaseSettings):
    tracking_uri: str = Field(alias="MLFLOW_TRACKING_URI")
    # Comma-separated lists, e.g. MONITOR_MODELS=latency-predictor,bandwidth-efficiency-predictor
    models: Annotated[list[str], NoDecode] = Field(
        ["latency-predictor", "bandwidth-efficiency-predictor"], alias="MONITOR_MODELS"
    )
    aliases: Annotated[list[str], NoDecode] = Field(["production", "staging"], alias="MONITOR_ALIASES")
    refresh_s: float = Field(30.0, gt=0, alias="MONITOR_REFRESH_S")
    host: str = Field("0.0.0.0", alias="MONITOR_HOST")
    port: int = Field(8001, alias="MONITOR_PORT")

    @field_validator("models", "aliases", mode="before")
    @classmethod
    def split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("must name at least one")
        return value
