"""The orchestrator's settings, one class per prefix: ORCHESTRATOR_*, the retraining triggers and data
(RETRAIN_*), the promotion gate (GATE_*), the rollout watch (WATCH_*, ROLLOUT_*, SERVING_UPSTREAMS),
how the trainer runs (TRAINER_*), and the shared tracking server, prediction log, Prometheus, Host
names and control token."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from contracts.guard import ControlSettings, GuardSettings
from contracts.models import DEFAULT_UPSTREAMS, MODEL_NAMES, parse_upstreams
from contracts.settings import (
    CommaList,
    EnvSettings,
    MlflowSettings,
    MonitoringDbSettings,
    PrometheusSettings,
    nested,
)

DRIFT_ALERTS = [
    "feature_drift_detected",
    "prediction_drift_high",
    "live_rmse_degraded",
    "estimated_rmse_degraded",
]


class RetrainSettings(EnvSettings):
    """What triggers a retraining and what it learns from (docs/closed-loop.md)."""

    model_config = SettingsConfigDict(env_prefix="RETRAIN_")

    on_alerts: CommaList = Field(
        DRIFT_ALERTS, description="alerts that trigger a retraining, comma-separated"
    )
    schedule: str = Field(
        "", description="retrain every model on this cron schedule (UTC), e.g. `0 3 * * *`; empty: only on "
        "alerts and demand"
    )  # fmt: skip
    cooldown_s: float = Field(
        900.0,
        ge=0,
        description="seconds an alert- or schedule-triggered retraining of a model waits after the last one",
    )
    window_s: float = Field(
        3600.0, gt=0, description="production window a retraining learns from, in seconds"
    )
    drift_lookback_s: float = Field(300.0, ge=0, description="seconds before an alert its window also covers")
    min_rows: int = Field(
        200,
        ge=1,
        description="fewer labelled production rows than this in the window: the retraining is skipped",
    )
    holdout_share: float = Field(0.3, gt=0, lt=1, description="share of the window held out for the gate")
    reference_rows: int = Field(
        20000,
        ge=0,
        description="rows of the reference data mixed into a retraining (and the fixed test set's source)",
    )
    candidates: CommaList = Field(
        ["random-forest", "gradient-boosting"], description="model families trained"
    )
    max_parallel: int = Field(
        1,
        ge=1,
        description="trainer runs at once across models (the others wait their turn): training takes "
        "every core",
    )


class GateSettings(EnvSettings):
    """The promotion gate (trainer/gate.py)."""

    model_config = SettingsConfigDict(env_prefix="GATE_")

    min_relative_improvement: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="the candidate's RMSE on the recent production window must improve by this share",
    )
    min_labelled_rows: int = Field(100, ge=1, description="labelled rows the gate needs to judge")
    max_test_regression: float = Field(
        0.10,
        ge=0,
        description="how much worse (relative) the candidate's test-set RMSE may be than production's",
    )
    max_reference_regression: float = Field(
        0.10,
        ge=0,
        description="the absolute bound: how much worse (relative) its RMSE on the fixed reference set "
        "may be than the model's baseline (its first production version's); feedback cannot walk quality "
        "past it",
    )


class WatchSettings(EnvSettings):
    """The watch of a new production version, after its rollout."""

    model_config = SettingsConfigDict(env_prefix="WATCH_")

    s: float = Field(
        300.0, gt=0, description="seconds a new production version is watched before it is trusted"
    )
    poll_s: float = Field(10.0, gt=0, description="seconds between looks at its figures")
    min_requests: int = Field(20, ge=1, description="requests needed before its error rate counts")
    max_error_rate_increase: float = Field(
        0.05, ge=0, le=1, description="error-rate increase that rolls it back"
    )
    max_rmse_ratio: float = Field(
        1.25, ge=1, description="live RMSE over the previous version's that rolls it back"
    )
    min_labelled: int = Field(30, ge=1, description="labelled predictions needed before its live RMSE counts")


class RolloutSettings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="ROLLOUT_")

    timeout_s: float = Field(
        600.0,
        gt=0,
        description="seconds a rollout may take: over once the model server answers as the new version",
    )


class ServingSettings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="SERVING_")

    upstreams: str = Field(DEFAULT_UPSTREAMS, description="model servers: name=base URL, comma-separated")

    @field_validator("upstreams")
    @classmethod
    def _upstreams_parse(cls, value: str) -> str:
        parse_upstreams(value, "SERVING_UPSTREAMS")
        return value


class TrainerRunSettings(EnvSettings):
    """How a retraining runs: a container of TRAINER_IMAGE (docker), a Kubernetes Job of it (kubernetes,
    in TRAINER_NAMESPACE, its MLflow password from the Secret TRAINER_SECRET) or a process (local mode)."""

    model_config = SettingsConfigDict(env_prefix="TRAINER_")

    runner: str = Field("docker", description="docker, kubernetes or process")
    namespace: str = Field("", description="the Kubernetes namespace of the Jobs")
    secret: str = Field("", description="the Kubernetes Secret holding the trainer's MLflow password")
    image: str = Field("", description="the trainer image")
    network: str = Field("", description="the Docker network of the trainer containers")
    extra_hosts: str = Field("", description="name=ip,... added to the containers' /etc/hosts")
    tracking_uri: str = Field(
        "http://mlflow:5000", description="the tracking server as the trainer reaches it"
    )
    memory: str = Field(
        "3g",
        description="memory limit of every training container (the trainer service, the orchestrator's "
        "retrainings)",
    )
    cpus: float = Field(
        1.5,
        gt=0,
        description="their CPU limit: at most this machine's cores; 1.5 of 2 leaves the model servers room",
    )
    pids: int = Field(512, ge=16, description="processes and threads a training container may run")
    timeout_s: float = Field(1800.0, gt=0, description="seconds a retraining may take")

    @field_validator("runner")
    @classmethod
    def _known_runner(cls, value: str) -> str:
        if value not in ("docker", "kubernetes", "process"):
            raise ValueError(f"TRAINER_RUNNER must be docker, kubernetes or process, got {value!r}")
        return value


class ProductionDataSettings(MonitoringDbSettings):
    """The prediction log, which the orchestrator must be told (empty says: no production data)."""

    db_uri: str = Field(description="the gateway's prediction log; empty: no production data")


class Settings(EnvSettings):
    """Every orchestrator setting, from the environment (names as in docker-compose.yml and .env)."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_")

    host: str = Field("0.0.0.0", description="address the orchestrator listens on")
    port: int = Field(8002, description="port the orchestrator listens on")
    models: CommaList = Field(list(MODEL_NAMES), description="models it retrains, comma-separated")
    registry_poll_s: float = Field(10.0, gt=0, description="seconds between looks for production moves")
    retrain: RetrainSettings = nested(RetrainSettings)
    gate: GateSettings = nested(GateSettings)
    watch: WatchSettings = nested(WatchSettings)
    rollout: RolloutSettings = nested(RolloutSettings)
    serving: ServingSettings = nested(ServingSettings)
    trainer: TrainerRunSettings = nested(TrainerRunSettings)
    mlflow: MlflowSettings = nested(MlflowSettings)
    monitoring: ProductionDataSettings = nested(ProductionDataSettings)
    prometheus: PrometheusSettings = nested(PrometheusSettings)
    guard: GuardSettings = nested(GuardSettings)
    control: ControlSettings = nested(ControlSettings)

    def upstreams(self) -> dict[str, str]:
        """Registered model name -> its model server's base URL."""
        return parse_upstreams(self.serving.upstreams, "SERVING_UPSTREAMS")
