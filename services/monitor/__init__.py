"""Model monitor: drift and live quality of the served versions from the prediction log, the
registry's training-time test metrics for Prometheus, and Alertmanager's webhook.

`GET /metrics` exports, for every model:
- drift (gateway_feature_drift_psi/ks, gateway_prediction_drift_psi, gateway_drifted_features_ratio,
  gateway_dataset_drift, gateway_drift_window_size) and live quality (gateway_live_mae/rmse/r2) of
  the version the gateways serve, computed every MONITOR_INTERVAL_S from the prediction log in
  Postgres, all gateway replicas at once (services/monitor/windows.py; the names predate the monitor
  and are kept for the dashboards and alert rules);
- `mlops_model_test_metric{model,alias,version,metric}` for the version behind each alias, read from
  the tracking server in the background.

`POST /alerts` receives Alertmanager's notifications with the platform's control token
(docs/monitoring.md, "Drift and live quality" and "Monitor metrics"; docs/operations.md, "Control
endpoints and secrets").
"""

from __future__ import annotations

from pydantic import Field, model_validator

from contracts.guard import ControlSettings, GuardSettings
from contracts.models import ALIASES, MODEL_NAMES
from contracts.settings import CommaList

DAY_S = 86_400.0


class Settings(GuardSettings, ControlSettings):
    tracking_uri: str = Field(alias="MLFLOW_TRACKING_URI")
    # Comma-separated; by default every registered model (contracts.models) and both aliases.
    models: CommaList = Field(list(MODEL_NAMES), alias="MONITOR_MODELS")
    aliases: CommaList = Field(list(ALIASES), alias="MONITOR_ALIASES")
    refresh_s: float = Field(30.0, gt=0, alias="MONITOR_REFRESH_S")
    host: str = Field("0.0.0.0", alias="MONITOR_HOST")
    port: int = Field(8001, alias="MONITOR_PORT")

    # Drift and live quality from the prediction log (empty: neither is computed).
    monitoring_db_uri: str = Field(
        "", alias="MONITORING_DB_URI", description="the prediction log (read only); empty: no drift"
    )
    interval_s: float = Field(10.0, gt=0, le=3600, alias="MONITOR_INTERVAL_S")
    # The newest DRIFT_WINDOW rows of the served version, at most DRIFT_MAX_ROWS_PER_REQUEST of one
    # request, none older than DRIFT_MAX_AGE_S; scored once it holds DRIFT_MIN_ROWS.
    drift_window: int = Field(500, ge=1, le=100_000, alias="DRIFT_WINDOW")
    drift_min_rows: int = Field(100, ge=1, le=100_000, alias="DRIFT_MIN_ROWS")
    drift_max_age_s: float = Field(3600.0, gt=0, le=30 * DAY_S, alias="DRIFT_MAX_AGE_S")
    drift_max_rows_per_request: int = Field(20, ge=1, le=100_000, alias="DRIFT_MAX_ROWS_PER_REQUEST")
    drift_psi_threshold: float = Field(0.2, gt=0, alias="DRIFT_PSI_THRESHOLD")
    dataset_drift_share: float = Field(0.3, ge=0, le=1, alias="DATASET_DRIFT_SHARE")
    # Live quality over the newest FEEDBACK_WINDOW feedback values, none older than FEEDBACK_MAX_AGE_S.
    feedback_window: int = Field(1000, ge=1, le=1_000_000, alias="FEEDBACK_WINDOW")
    feedback_max_age_s: float = Field(DAY_S, gt=0, le=365 * DAY_S, alias="FEEDBACK_MAX_AGE_S")

    @model_validator(mode="after")
    def _window_can_be_scored(self) -> Settings:
        if self.drift_min_rows > self.drift_window:
            raise ValueError(
                f"DRIFT_MIN_ROWS ({self.drift_min_rows}) is larger than DRIFT_WINDOW ({self.drift_window}): "
                "drift would never be computed"
            )
        return self
