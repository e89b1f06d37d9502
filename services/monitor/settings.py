"""The monitor's settings: MONITOR_* here, the drift and live-quality windows (DRIFT_*,
DATASET_DRIFT_*, FEEDBACK_*), and the shared tracking server, prediction log, Host names and control
token."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from contracts.guard import ControlSettings, GuardSettings
from contracts.models import ALIASES, MODEL_NAMES
from contracts.settings import CommaList, EnvSettings, MlflowSettings, MonitoringDbSettings, nested

DAY_S = 86_400.0


class DriftSettings(EnvSettings):
    """The drift window: the newest DRIFT_WINDOW rows of the served version, at most
    DRIFT_MAX_ROWS_PER_REQUEST of one request, none older than DRIFT_MAX_AGE_S; scored once it holds
    DRIFT_MIN_ROWS."""

    model_config = SettingsConfigDict(env_prefix="DRIFT_")

    window: int = Field(500, ge=1, le=100_000, description="rows in the drift window at most")
    min_rows: int = Field(100, ge=1, le=100_000, description="rows the window needs before it is scored")
    max_age_s: float = Field(3600.0, gt=0, le=30 * DAY_S, description="seconds the oldest row may be old")
    max_rows_per_request: int = Field(20, ge=1, le=100_000, description="rows of one request at most")
    psi_threshold: float = Field(0.2, gt=0, description="a feature drifts at a PSI above this")

    @model_validator(mode="after")
    def _window_can_be_scored(self) -> DriftSettings:
        if self.min_rows > self.window:
            raise ValueError(
                f"DRIFT_MIN_ROWS ({self.min_rows}) is larger than DRIFT_WINDOW ({self.window}): "
                "drift would never be computed"
            )
        return self


class DatasetDriftSettings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="DATASET_DRIFT_")

    share: float = Field(
        0.3, ge=0, le=1, description="the dataset drifts when more than this share of features do"
    )


class FeedbackSettings(EnvSettings):
    """Live quality over the newest FEEDBACK_WINDOW feedback values, none older than FEEDBACK_MAX_AGE_S."""

    model_config = SettingsConfigDict(env_prefix="FEEDBACK_")

    window: int = Field(1000, ge=1, le=1_000_000, description="feedback values in the window at most")
    max_age_s: float = Field(DAY_S, gt=0, le=365 * DAY_S, description="seconds the oldest value may be old")


class Settings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="MONITOR_")

    models: CommaList = Field(
        list(MODEL_NAMES), description="models to monitor, comma-separated (default: every registered model)"
    )
    aliases: CommaList = Field(list(ALIASES), description="aliases whose test metrics are exported")
    refresh_s: float = Field(30.0, gt=0, description="seconds between reads of the registry's test metrics")
    host: str = Field("0.0.0.0", description="address the monitor listens on")
    port: int = Field(8001, description="port the monitor listens on")
    interval_s: float = Field(
        10.0, gt=0, le=3600, description="seconds between drift and live-quality computations"
    )
    drift: DriftSettings = nested(DriftSettings)
    dataset_drift: DatasetDriftSettings = nested(DatasetDriftSettings)
    feedback: FeedbackSettings = nested(FeedbackSettings)
    mlflow: MlflowSettings = nested(MlflowSettings)
    monitoring: MonitoringDbSettings = nested(MonitoringDbSettings)
    guard: GuardSettings = nested(GuardSettings)
    control: ControlSettings = nested(ControlSettings)
