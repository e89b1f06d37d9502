"""Bootstrap PostgreSQL for the platform (idempotent, as the superuser, at every start):

- the databases (`mlflow` comes from the postgres image on first start; the others must also
  appear on existing volumes);
- a login role per service (contracts/database.py), its password re-applied from .env;
- `mlflow` and `mlflow_auth` owned by MLflow's role, every object in them too (tables an older
  platform, a restore or `make upgrade` created as the superuser are handed over);
- the prediction log's schema migrated to its newest revision (contracts/predlog_migrations) and
  exactly the grants each role needs;
- no database reachable by roles that have no business there (CONNECT revoked from PUBLIC).

Why each role may do what it may: docs/operations.md, "Database roles". The steps are in setup.py;
this file holds the settings only.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from contracts import database as names


class Settings(BaseSettings):
    # The superuser, on any database it may connect to (the others are reached with the same login).
    admin_uri: str = Field(alias="POSTGRES_ADMIN_URI")
    mlflow_password: str = Field(min_length=1, alias="POSTGRES_MLFLOW_PASSWORD")
    gateway_password: str = Field(min_length=1, alias="POSTGRES_GATEWAY_PASSWORD")
    monitor_password: str = Field(min_length=1, alias="POSTGRES_MONITOR_PASSWORD")
    orchestrator_password: str = Field(min_length=1, alias="POSTGRES_ORCHESTRATOR_PASSWORD")
    grafana_password: str = Field(min_length=1, alias="POSTGRES_GRAFANA_PASSWORD")
    attempts: int = Field(10, alias="DBINIT_ATTEMPTS")

    def passwords(self) -> dict[str, str]:
        return {
            names.MLFLOW_ROLE: self.mlflow_password,
            names.GATEWAY_ROLE: self.gateway_password,
            names.MONITOR_ROLE: self.monitor_password,
            names.ORCHESTRATOR_ROLE: self.orchestrator_password,
            names.GRAFANA_ROLE: self.grafana_password,
        }
