"""Trainer settings: one typed object read from the environment (and overridden by the CLI)."""

from __future__ import annotations

import getpass

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts import experiments
from contracts.settings import EnvSettings, LocalMlflowSettings, nested


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "participant"


class TrainerMlflowSettings(LocalMlflowSettings):
    public_url: str | None = Field(
        None,
        description="where a browser reaches the MLflow UI, for the links the trainer prints (in the stack "
        "the tracking URI names a host only containers resolve); default: the tracking URI",
    )


class RunTags(EnvSettings):
    """What every run is tagged with: stack-wide names, so without a prefix."""

    model_config = SettingsConfigDict(env_prefix="")

    participant: str = Field(
        default_factory=_os_user,
        description="experiment name for `make train` runs: one experiment per participant (default: the "
        "login name; `make env` writes it)",
        json_schema_extra={"example": "participant"},
    )
    platform_version: str = Field(
        "dev", description="tag of the images we build ourselves (mlops/mlflow, mlops/trainer, mlops/serving)"
    )
    git_commit: str = Field("unknown", description="the commit the code was built from")


class Settings(EnvSettings):
    """Where the trainer logs and what it tags its runs with."""

    model_config = SettingsConfigDict(env_prefix="TRAINER_")

    image_digest: str = Field(
        "",
        description="the trainer image's digest, set by whoever starts the container (`make train`, the "
        "orchestrator) and tagged on every run; empty outside a container",
    )
    connect_attempts: int = Field(6, ge=1, description="tries to reach the tracking server before giving up")
    connect_max_wait_s: float = Field(8.0, gt=0, description="longest wait between those tries, in seconds")
    system_metrics_interval_s: float = Field(0.5, gt=0, description="seconds between system-metrics samples")
    mlflow: TrainerMlflowSettings = nested(TrainerMlflowSettings)
    tags: RunTags = nested(RunTags)

    @property
    def ui_url(self) -> str | None:
        """The MLflow UI's base URL for links; None when the tracking URI is a local store (no UI)."""
        url = self.mlflow.public_url or self.mlflow.tracking_uri
        return url.rstrip("/") if url.startswith(("http://", "https://")) else None

    def experiment_link(self, experiment_id: str) -> str | None:
        """The experiment's runs in the UI's model-training view (contracts/experiments.py)."""
        return experiments.experiment_url(self.ui_url, experiment_id) if self.ui_url else None

    def run_link(self, experiment_id: str, run_id: str) -> str | None:
        return experiments.run_url(self.ui_url, experiment_id, run_id) if self.ui_url else None
