"""The platform's PostgreSQL databases, the login role of each service, and the read-only views
Grafana's "MLflow DB" datasource may query (docs/operations.md, "Database roles").

The superuser (POSTGRES_USER) is for bootstrap (services/dbinit) and the backup one-shot only; every
long-running service logs in with its own role below, with a password from .env.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

MLFLOW_DATABASE = "mlflow"  # MLflow's backend store (created by the postgres image)
AUTH_DATABASE = "mlflow_auth"  # MLflow's users and permissions (basic-auth)
MONITORING_DATABASE = "monitoring"  # the gateway's prediction log (contracts/predlog.py)
DATABASES = (MLFLOW_DATABASE, AUTH_DATABASE, MONITORING_DATABASE)

# Login roles, one per service that talks to Postgres. Not `mlflow`: that is POSTGRES_USER's default.
MLFLOW_ROLE = "mlflow_server"  # owns `mlflow` and `mlflow_auth` (runs MLflow's migrations)
GATEWAY_ROLE = "gateway"  # writes the prediction log and feedback
MONITOR_ROLE = "monitor"  # reads the prediction log: drift and live quality
ORCHESTRATOR_ROLE = "orchestrator"  # reads the labelled predictions
GRAFANA_ROLE = "grafana"  # reads the views below, read-only transactions
ROLES = (MLFLOW_ROLE, GATEWAY_ROLE, MONITOR_ROLE, ORCHESTRATOR_ROLE, GRAFANA_ROLE)

# What Grafana's dashboards (grafana/dashboards/*.json, datasource `mlflow-db`) may read of MLflow's
# store: only the columns they query, and of the params only the two they show (params are free text
# a participant logs). Owned by MLFLOW_ROLE, which re-creates them after each migration: a view on a
# column would block MLflow's migrations that change it (services/mlflow/migrate.py).
GRAFANA_SCHEMA = "grafana"
GRAFANA_VIEWS = {
    "runs": "SELECT run_uuid, experiment_id, name, status, start_time, lifecycle_stage FROM public.runs",
    "experiments": "SELECT experiment_id, name FROM public.experiments",
    "params": "SELECT run_uuid, key, value FROM public.params WHERE key IN ('model', 'target')",
    "latest_metrics": "SELECT run_uuid, key, value, is_nan FROM public.latest_metrics",
}


def drop_grafana_views(cur: Any) -> None:
    """Remove Grafana's views (before MLflow's migrations; create_grafana_views brings them back)."""
    cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(GRAFANA_SCHEMA)))


def create_grafana_views(cur: Any) -> None:
    """Create or replace Grafana's views in MLflow's database and let GRAFANA_ROLE read them, and only
    them. security_barrier: a query's own conditions cannot see rows the view filters out."""
    schema, reader = sql.Identifier(GRAFANA_SCHEMA), sql.Identifier(GRAFANA_ROLE)
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
    for name, query in GRAFANA_VIEWS.items():
        cur.execute(
            sql.SQL("CREATE OR REPLACE VIEW {}.{} WITH (security_barrier) AS {}").format(
                schema,
                sql.Identifier(name),
                sql.SQL(query),  # type: ignore[arg-type]  # constants above
            )
        )
    cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, reader))
    cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, reader))
