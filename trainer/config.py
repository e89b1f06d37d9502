"""Trainer settings: one typed object read from the environment (and overridden by the CLI)."""

from __future__ import annotations

import getpass

from pydantic import Field
from pydantic_settings import BaseSettings


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "participant"


class Settings(BaseSettings):
    """Where the trainer logs and what it registers. Environment variable names in brackets."""

    tracking_uri: str = Field("http://localhost:5000", alias="MLFLOW_TRACKING_URI")
    participant: str = Field(default_factory=_os_user, alias="PARTICIPANT")
    platform_version: str = Field("dev", alias="PLATFORM_VERSION")
    git_commit: str = Field("unknown", alias="GIT_COMMIT")
    # How long to keep retrying an unreachable tracking server before giving up.
    connect_attempts: int = Field(6, alias="TRAINER_CONNECT_ATTEMPTS")
    connect_max_wait_s: float = Field(8.0, alias="TRAINER_CONNECT_MAX_WAIT_S")
    system_metrics_interval_s: float = Field(0.5, alias="TRAINER_SYSTEM_METRICS_INTERVAL_S")

    model_config = {"populate_by_name": True, "extra": "ignore"}
