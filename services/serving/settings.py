"""The serving launcher's settings (one launcher per model: docker-compose.yml, `serving-*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts.models import PRODUCTION
from contracts.settings import EnvSettings, MlflowSettings, nested


class Settings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="SERVING_")

    model_name: str = Field(description="the registered model this launcher serves")
    alias: str = Field(PRODUCTION, description="the alias whose version is served")
    host: str = Field("0.0.0.0", description="address the model server listens on")
    port: int = Field(8080, description="port the model server listens on")
    workers: int = Field(
        1,
        ge=1,
        description="worker processes per model server (each holds the model: about 60 MiB for the ONNX "
        "form, docs/serving.md); the gateway sends each server this many requests at a time and batches "
        "the rest. `make env` sizes it to this machine's cores",
    )
    poll_s: float = Field(
        5.0, gt=0, description="seconds between checks while waiting for the alias to exist"
    )
    watch_s: float = Field(15.0, gt=0, description="seconds between checks whether the alias moved")
    start_timeout_s: float = Field(
        600.0, gt=0, description="seconds a new version may take to load before the launcher gives up on it"
    )
    mlflow: MlflowSettings = nested(MlflowSettings)
