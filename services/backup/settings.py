"""The backup job's settings (`python -m services.backup backup|restore|upgrade`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts.settings import EnvSettings, PostgresAdminSettings, S3Settings, nested


class MlflowStoreSettings(EnvSettings):
    """MLflow's databases in the cluster."""

    model_config = SettingsConfigDict(env_prefix="MLFLOW_")

    database: str = Field("mlflow", description="MLflow's backend store, dumped last")
    auth_database: str = Field(
        "mlflow_auth",
        description="MLflow's users: every start creates the service accounts, so rows there do not make a "
        "restore target 'not empty'; a restore replaces them with the archived ones",
    )


class Settings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="BACKUP_")

    databases: str = Field(
        "", description="databases to back up, comma-separated; empty: every database of the cluster"
    )
    dir: Path = Field(Path("backups"), description="where archives are written and read")
    postgres: PostgresAdminSettings = nested(PostgresAdminSettings)
    s3: S3Settings = nested(S3Settings)
    mlflow: MlflowStoreSettings = nested(MlflowStoreSettings)
