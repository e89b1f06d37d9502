"""`upgrade`: MLflow's schemas and the prediction log's migrated, after a backup and with the
writers stopped (`make upgrade`)."""

from __future__ import annotations

from contracts.database import MONITORING_DATABASE, drop_grafana_views
from contracts.predlog_migrations import apply_schema
from contracts.settings import database_uri, sqlalchemy_uri
from services.backup import Settings
from services.backup import databases as db


def upgrade_schemas(settings: Settings) -> str:
    """`mlflow db upgrade` on MLflow's store, the auth store's migrations and the prediction log's
    (contracts/predlog_migrations; a log from before them is stamped, its rows kept): with the writers
    stopped and after a backup (make upgrade). Returns the revisions before and after."""
    from mlflow.db import upgrade  # noqa: PLC0415  (MLflow loads slowly: only this command needs it)
    from mlflow.server.auth.db.utils import migrate  # noqa: PLC0415
    from sqlalchemy import create_engine  # noqa: PLC0415

    server = db.Server.from_uri(settings.postgres.admin_uri)
    stores = [settings.mlflow.database, settings.mlflow.auth_database, MONITORING_DATABASE]

    def revisions() -> dict[str, str]:
        found = {}
        for name in stores:
            if db.database_exists(server, name):
                with server.cursor(name) as cur:
                    found.update({f"{name}.{t}": r for t, r in db.schema_revisions(cur).items()})
        return found

    before = revisions()
    if db.database_exists(server, settings.mlflow.database):
        with server.cursor(settings.mlflow.database) as cur:
            drop_grafana_views(cur)  # they would block migrating their columns; MLflow's start makes them
    admin = sqlalchemy_uri(settings.postgres.admin_uri)
    upgrade.main([database_uri(admin, settings.mlflow.database)], standalone_mode=False)
    db.ensure_database(server, settings.mlflow.auth_database)
    engine = create_engine(database_uri(admin, settings.mlflow.auth_database))
    try:
        migrate(engine, "head")
    finally:
        engine.dispose()
    if db.database_exists(server, MONITORING_DATABASE):  # else create-databases makes it at `make up`
        apply_schema(database_uri(admin, MONITORING_DATABASE))
    after = revisions()
    changes = [f"{key} {before.get(key, 'none')} -> {after[key]}" for key in sorted(after)]
    return "upgrade: " + "; ".join(changes)
