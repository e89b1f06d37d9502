"""The orchestrator closes the loop: it retrains a model when it drifts or decays, on a schedule or on
demand, lets the one promotion gate judge the challenger on recent production data, and watches each
new production version, rolling it back when it does worse than the one it replaced.

Triggers: Alertmanager's webhook (`POST /alerts`), a cron schedule (`RETRAIN_SCHEDULE`), and
`POST /retrain` (`make retrain`); the HTTP ones need the platform's control token (contracts/guard.py).
One retraining per model at a time; automatic triggers also wait out a cooldown; a trigger that finds
its model busy is recorded and dropped, never queued.

A retraining is an MLflow Project run (`mlflow run trainer -e retrain`) of the trainer image, started
as a container through the Docker Engine API, as a Kubernetes Job (the Helm chart), or as a process
in local mode, under a run of the
`retraining` experiment that records the trigger, the production data window, the trainer's logs and
image digest, the gate's decision and the watch's outcome. See docs/closed-loop.md.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from contracts.guard import ControlSettings, GuardSettings
from contracts.models import DEFAULT_UPSTREAMS, MODEL_NAMES, parse_upstreams
from contracts.settings import CommaList


class Settings(GuardSettings, ControlSettings):
    """Every orchestrator setting, from the environment (names as in docker-compose.yml and .env)."""

    model_config = SettingsConfigDict(populate_by_name=True)

    tracking_uri: str = Field(alias="MLFLOW_TRACKING_URI")
    monitoring_db_uri: str = Field(
        alias="MONITORING_DB_URI", description="the gateway's prediction log; empty: no production data"
    )
    prometheus_url: str = Field("", alias="PROMETHEUS_URL", description="empty: no error-rate watch")
    host: str = Field("0.0.0.0", alias="ORCHESTRATOR_HOST")
    port: int = Field(8002, alias="ORCHESTRATOR_PORT")
    models: CommaList = Field(list(MODEL_NAMES), alias="ORCHESTRATOR_MODELS")

    # Triggers.
    alerts: CommaList = Field(
        ["feature_drift_detected", "prediction_drift_high", "live_rmse_degraded", "estimated_rmse_degraded"],
        alias="RETRAIN_ON_ALERTS",
    )
    schedule: str = Field("", alias="RETRAIN_SCHEDULE", description="cron expression; empty: off")
    cooldown_s: float = Field(900.0, ge=0, alias="RETRAIN_COOLDOWN_S")

    # Production data.
    window_s: float = Field(3600.0, gt=0, alias="RETRAIN_WINDOW_S")
    drift_lookback_s: float = Field(300.0, ge=0, alias="RETRAIN_DRIFT_LOOKBACK_S")
    min_rows: int = Field(200, ge=1, alias="RETRAIN_MIN_ROWS")
    holdout_share: float = Field(0.3, gt=0, lt=1, alias="RETRAIN_HOLDOUT_SHARE")
    reference_rows: int = Field(20000, ge=0, alias="RETRAIN_REFERENCE_ROWS")
    candidates: CommaList = Field(["random-forest", "gradient-boosting"], alias="RETRAIN_CANDIDATES")

    # The gate (trainer/gate.py).
    gate_min_improvement: float = Field(0.02, ge=0, lt=1, alias="GATE_MIN_RELATIVE_IMPROVEMENT")
    gate_min_rows: int = Field(100, ge=1, alias="GATE_MIN_LABELLED_ROWS")
    gate_max_test_regression: float = Field(0.10, ge=0, alias="GATE_MAX_TEST_REGRESSION")
    gate_max_reference_regression: float = Field(0.10, ge=0, alias="GATE_MAX_REFERENCE_REGRESSION")

    # Rollout watch: a rollout is over once the model server answers as the new version.
    serving: str = Field(
        DEFAULT_UPSTREAMS,
        alias="SERVING_UPSTREAMS",
        description="model servers: name=base URL, comma-separated",
    )
    rollout_timeout_s: float = Field(600.0, gt=0, alias="ROLLOUT_TIMEOUT_S")
    watch_s: float = Field(300.0, gt=0, alias="WATCH_S")
    watch_poll_s: float = Field(10.0, gt=0, alias="WATCH_POLL_S")
    watch_min_requests: int = Field(20, ge=1, alias="WATCH_MIN_REQUESTS")
    watch_max_error_rate_increase: float = Field(0.05, ge=0, le=1, alias="WATCH_MAX_ERROR_RATE_INCREASE")
    watch_max_rmse_ratio: float = Field(1.25, ge=1, alias="WATCH_MAX_RMSE_RATIO")
    watch_min_labelled: int = Field(30, ge=1, alias="WATCH_MIN_LABELLED")
    registry_poll_s: float = Field(10.0, gt=0, alias="ORCHESTRATOR_REGISTRY_POLL_S")

    # How the trainer runs: a container of TRAINER_IMAGE (docker), a Kubernetes Job of it (kubernetes,
    # in TRAINER_NAMESPACE, its MLflow password from the Secret TRAINER_SECRET) or a process (local mode).
    runner: str = Field("docker", alias="TRAINER_RUNNER")
    trainer_namespace: str = Field("", alias="TRAINER_NAMESPACE")
    trainer_secret: str = Field("", alias="TRAINER_SECRET")
    trainer_image: str = Field("", alias="TRAINER_IMAGE")
    trainer_network: str = Field("", alias="TRAINER_NETWORK")
    trainer_extra_hosts: str = Field("", alias="TRAINER_EXTRA_HOSTS", description="name=ip,...")
    trainer_tracking_uri: str = Field("http://mlflow:5000", alias="TRAINER_TRACKING_URI")
    trainer_memory: str = Field("3g", alias="TRAINER_MEMORY")
    trainer_cpus: float = Field(1.5, gt=0, alias="TRAINER_CPUS")
    trainer_pids: int = Field(512, ge=16, alias="TRAINER_PIDS")
    trainer_timeout_s: float = Field(1800.0, gt=0, alias="TRAINER_TIMEOUT_S")
    # Trainer runs at once across models (the others wait their turn): training takes every core.
    max_parallel: int = Field(1, ge=1, alias="RETRAIN_MAX_PARALLEL")

    @field_validator("serving")
    @classmethod
    def _serving_parses(cls, value: str) -> str:
        parse_upstreams(value, "SERVING_UPSTREAMS")
        return value

    def upstreams(self) -> dict[str, str]:
        """Registered model name -> its model server's base URL."""
        return parse_upstreams(self.serving, "SERVING_UPSTREAMS")

    @field_validator("runner")
    @classmethod
    def _known_runner(cls, value: str) -> str:
        if value not in ("docker", "kubernetes", "process"):
            raise ValueError(f"TRAINER_RUNNER must be docker, kubernetes or process, got {value!r}")
        return value
