"""`python -m services.mlflow.migrate`: MLflow's schema migration at start, as MLflow's own role.

Grafana's views (contracts/database.py) are dropped first, since a view on a column blocks a
migration that changes it, and created again on the migrated schema. The backend store URI comes
from MLFLOW_BACKEND_STORE_URI (never argv, where `ps` would show its password).
"""

from __future__ import annotations

import os
import sys

import psycopg2

from contracts.database import create_grafana_views, drop_grafana_views
from contracts.settings import libpq_uri


def with_views(uri: str, change: str) -> None:
    conn = psycopg2.connect(libpq_uri(uri), application_name="mlflow-migrate")
    try:
        with conn, conn.cursor() as cur:
            (create_grafana_views if change == "create" else drop_grafana_views)(cur)
    finally:
        conn.close()


def main() -> int:
    from mlflow.db import upgrade  # noqa: PLC0415  (slow import: only this command needs it)

    uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
    postgres = uri.startswith("postgresql")
    if postgres:
        with_views(uri, "drop")
    upgrade.main([uri], "mlflow db upgrade", standalone_mode=False)
    if postgres:
        with_views(uri, "create")
        print("mlflow: Grafana's read-only views created", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
