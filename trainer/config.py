"""Trainer settings: one typed object read from the environment (and overridden by the CLI)."""

from __future__ import annotations

import getpass

from pydantic import Field
from pydantic_settings import BaseSettings

from contracts import experiments


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "participant"


class Settings(BaseSettings):
    """Where the trainer logs and what it registers. Environment variable names in brackets."""

    tracking_uri: str = Field("http://localhost:5000", alias="MLFLOW_TRACKING_URI")
    # Where a browser reaches the MLflow UI, for the links the trainer prints. In the stack the
    # tracking URI is http://mlflow:5000, a name only containers resolve. Default: the tracking URI.
    public_url: str | None = Field(None, alias="MLFLOW_PUBLIC_URL")
    participant: str = Field(default_factory=_os_user, alias="PARTICIPANT")
    platform_version: str = Field("dev", alias="PLATFORM_VERSION")
    git_commit: str = Field("unknown", alias="GIT_COMMIT")
    # The trainer image's digest, set by whoever starts the container (`make train`, the
    # orchestrator); tagged on every run for reproducibility. Empty outside a container.
    image_digest: str = Field("", alias="TRAINER_IMAGE_DIGEST")
    # How long to keep retrying an unreachable tracking server before giving up.
    connect_attempts: int = Field(6, alias="TRAINER_CONNECT_ATTEMPTS")
    connect_max_wait_s: float = Field(8.0, alias="TRAINER_CONNECT_MAX_WAIT_S")
    system_metrics_interval_s: float = Field(0.5, alias="TRAINER_SYSTEM_METRICS_INTERVAL_S")

    model_config = {"populate_by_name": True, "extra": "ignore"}

    @property
    def ui_url(self) -> str | None:
        """The MLflow UI's base URL for links; None when the tracking URI is a local store (no UI)."""
        url = self.public_url or self.tracking_uri
        return url.rstrip("/") if url.startswith(("http://", "https://")) else None

    def experiment_link(self, experiment_id: str) -> str | None:
        """The experiment's runs in the UI's model-training view (contracts/experiments.py)."""
        return experiments.experiment_url(self.ui_url, experiment_id) if self.ui_url else None

    def run_link(self, experiment_id: str, run_id: str) -> str | None:
        return experiments.run_url(self.ui_url, experiment_id, run_id) if self.ui_url else None
