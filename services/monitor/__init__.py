"""Model monitor: the registry's training-time test metrics for Prometheus, and Alertmanager's webhook.

`GET /metrics` exports `mlops_model_test_metric{model,alias,version,metric}` for the version behind
each alias, read from the tracking server in the background; `POST /alerts` receives Alertmanager's
notifications with the platform's control token (docs/monitoring.md, "Monitor metrics";
docs/operations.md, "Control endpoints and secrets").
"""

from __future__ import annotations

from pydantic import Field

from contracts.guard import ControlSettings, GuardSettings
from contracts.models import ALIASES, MODEL_NAMES
from contracts.settings import CommaList


class Settings(GuardSettings, ControlSettings):
    tracking_uri: str = Field(alias="MLFLOW_TRACKING_URI")
    # Comma-separated; by default every registered model (contracts.models) and both aliases.
    models: CommaList = Field(list(MODEL_NAMES), alias="MONITOR_MODELS")
    aliases: CommaList = Field(list(ALIASES), alias="MONITOR_ALIASES")
    refresh_s: float = Field(30.0, gt=0, alias="MONITOR_REFRESH_S")
    host: str = Field("0.0.0.0", alias="MONITOR_HOST")
    port: int = Field(8001, alias="MONITOR_PORT")
