"""The prediction log's schema (contracts/predlog.py) as versioned Alembic migrations, run in code
(no alembic.ini): `apply_schema` brings a database to the newest revision, idempotently, in one
transaction. The create-databases job runs it at every start and `make upgrade` after its backup,
as the database's owner; the services' roles may not run DDL nor write the version table.

A database from before the migrations (the table, no `alembic_version`) is stamped at the baseline
revision, its rows untouched, then upgraded. A new revision goes into versions/ (docs/architecture.md,
"The prediction log").
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

from contracts.predlog import PREDICTIONS
from contracts.settings import libpq_uri, sqlalchemy_uri

SCRIPTS = Path(__file__).resolve().parent
# The revision that created the schema every platform had before migrations existed.
BASELINE = "0001"
BASELINE_COLUMNS = ("id", "ts", "request_id", "model", "version", "features", "prediction", "latency_ms",
                    "actual", "feedback_ts")  # fmt: skip
VERSION_TABLE = "alembic_version"
# Two jobs migrating at once (a CI run next to a `make up`) wait for each other.
LOCK_KEY = 7_011_522_001


class SchemaError(Exception):
    """A prediction log whose schema no revision describes (one line for the operator)."""


def config(connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration, built here and not read from an ini file in the working directory."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision in versions/."""
    found = ScriptDirectory.from_config(config()).get_current_head()
    assert found is not None, f"no revision in {SCRIPTS / 'versions'}"
    return found


def current_revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _check_baseline(connection: sa.Connection) -> None:
    """An unversioned table must be the baseline's, or stamping it would lie."""
    found = {column["name"] for column in sa.inspect(connection).get_columns(PREDICTIONS)}
    missing = sorted(set(BASELINE_COLUMNS) - found)
    if missing:
        raise SchemaError(
            f"table {PREDICTIONS!r} has no {VERSION_TABLE!r} and lacks columns {missing} of revision "
            f"{BASELINE}: it was not made by this platform"
        )


def apply_schema(uri: str) -> str:
    """Migrate the prediction log at `uri` to the newest revision; returns what was done, one line."""
    engine = sa.create_engine(sqlalchemy_uri(libpq_uri(uri)), poolclass=NullPool)
    try:
        with engine.begin() as connection:  # Postgres runs DDL in transactions: all or nothing
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            before = current_revision(connection)
            cfg = config(connection)
            stamped = before is None and sa.inspect(connection).has_table(PREDICTIONS)
            if stamped:
                _check_baseline(connection)
                command.stamp(cfg, BASELINE)
            command.upgrade(cfg, "head")
            after = current_revision(connection)
    finally:
        engine.dispose()
    if stamped:
        return f"schema {after} (the existing table stamped at {BASELINE}, rows kept)"
    return f"schema {after}" + ("" if before == after else f" (was {before or 'empty'})")
