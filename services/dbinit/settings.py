"""The create-databases job's settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts import database as names
from contracts.settings import EnvSettings, PostgresAdminSettings, nested, secret_example


class RolePasswords(EnvSettings):
    """The services' own Postgres roles' passwords (random in .env; applied at every start)."""

    model_config = SettingsConfigDict(env_prefix="POSTGRES_")

    mlflow_password: str = Field(
        min_length=1,
        json_schema_extra=secret_example(),
        description="MLflow's role `mlflow_server`: owns the `mlflow` and `mlflow_auth` databases",
    )
    gateway_password: str = Field(
        min_length=1,
        json_schema_extra=secret_example(),
        description="the gateway's role `gateway`: appends predictions and feedback to the log",
    )
    monitor_password: str = Field(
        min_length=1,
        json_schema_extra=secret_example(),
        description="the monitor's role `monitor`: reads the prediction log (drift, live quality)",
    )
    orchestrator_password: str = Field(
        min_length=1,
        json_schema_extra=secret_example(),
        description="the orchestrator's role `orchestrator`: reads the labelled predictions",
    )
    grafana_password: str = Field(
        min_length=1,
        json_schema_extra=secret_example(),
        description="Grafana's role `grafana`: read-only, only the views its dashboards query",
    )


class Settings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="DBINIT_")

    attempts: int = Field(10, ge=1, description="connection attempts while Postgres starts")
    postgres: PostgresAdminSettings = nested(PostgresAdminSettings)
    roles: RolePasswords = nested(RolePasswords)

    def passwords(self) -> dict[str, str]:
        return {
            names.MLFLOW_ROLE: self.roles.mlflow_password,
            names.GATEWAY_ROLE: self.roles.gateway_password,
            names.MONITOR_ROLE: self.roles.monitor_password,
            names.ORCHESTRATOR_ROLE: self.roles.orchestrator_password,
            names.GRAFANA_ROLE: self.roles.grafana_password,
        }
