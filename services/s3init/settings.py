"""The create-bucket job's settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts.settings import EnvSettings, S3Settings, nested


class Settings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="S3_INIT_")

    attempts: int = Field(10, ge=1, description="connection attempts while the S3 store starts")
    s3: S3Settings = nested(S3Settings)
