"""The prediction log's migrations (contracts/predlog_migrations) on a real PostgreSQL cluster: an
empty database and one holding the schema from before migrations (with rows and feedback, no version
table) both reach the newest revision with every row and every feedback value kept; a second run
changes nothing."""

from __future__ import annotations

import json
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.pool import NullPool

from contracts.predlog import FEEDBACK, LABELLED, PREDICTIONS
from contracts.predlog_migrations import BASELINE, SchemaError, apply_schema, config, head
from contracts.settings import libpq_uri, sqlalchemy_uri
from tests.conftest import fresh_database
from tests.predlog_support import LEGACY_SCHEMA

pytestmark = pytest.mark.integration


def query(uri: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg2.connect(libpq_uri(uri)) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall() if cur.description else []
    conn.close()
    return rows


TABLE = PREDICTIONS
RELATIONS = [PREDICTIONS, FEEDBACK, LABELLED]


def schema_of(uri: str) -> list[tuple[Any, ...]]:
    """Columns (name, type, nullable) and indexes of the log's tables and view: what must not depend
    on the path taken."""
    columns = query(
        uri,
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = ANY(%s) ORDER BY table_name, column_name",
        (RELATIONS,),
    )
    indexes = query(
        uri, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s) ORDER BY 1", (RELATIONS,)
    )
    return columns + indexes


def revision(uri: str) -> list[tuple[Any, ...]]:
    return query(uri, "SELECT version_num FROM alembic_version")


def test_an_empty_database_reaches_head(postgres_uri: str) -> None:
    uri = fresh_database(postgres_uri, "predlog_empty")
    assert apply_schema(uri) == f"schema {head()} (was empty)"
    assert revision(uri) == [(head(),)]
    assert {row[0] for row in schema_of(uri) if len(row) == 4} == set(RELATIONS)
    assert apply_schema(uri) == f"schema {head()}"  # a second run: nothing to do
    assert revision(uri) == [(head(),)]


def test_a_log_from_before_migrations_is_stamped_and_keeps_every_row(postgres_uri: str) -> None:
    legacy = fresh_database(postgres_uri, "predlog_legacy")
    query(legacy, LEGACY_SCHEMA)
    rows = [
        (f"req-{i}", "latency", "3", json.dumps({"hop_count": i}), float(i), 1.5,
         float(i) + 0.5 if i % 2 else None)
        for i in range(50)
    ]  # fmt: skip
    for row in rows:
        query(
            legacy,
            f"INSERT INTO {TABLE} (ts, request_id, model, version, features, prediction, latency_ms, actual) "
            "VALUES (now(), %s, %s, %s, %s, %s, %s, %s)",
            row,
        )
    kept = "id, ts, request_id, model, version, features, prediction, latency_ms"
    before = query(legacy, f"SELECT {kept} FROM {TABLE} ORDER BY id")
    labelled = query(legacy, f"SELECT {kept}, actual FROM {TABLE} WHERE actual IS NOT NULL ORDER BY id")
    assert len(labelled) == 25

    line = apply_schema(legacy)

    assert f"stamped at {BASELINE}, rows kept" in line
    assert revision(legacy) == [(head(),)]
    assert query(legacy, f"SELECT {kept} FROM {TABLE} ORDER BY id") == before
    # Every feedback value moved to its own table, and the view joins it back.
    assert query(legacy, f"SELECT {kept}, actual FROM {LABELLED} ORDER BY id") == labelled
    assert query(legacy, f"SELECT count(*) FROM {FEEDBACK} WHERE ts IS NULL") == [(0,)]
    fresh = fresh_database(postgres_uri, "predlog_fresh")
    apply_schema(fresh)
    assert schema_of(legacy) == schema_of(fresh)  # the same schema, whichever way it came
    assert apply_schema(legacy) == f"schema {head()}"  # and re-running is a no-op
    assert query(legacy, f"SELECT {kept} FROM {TABLE} ORDER BY id") == before
    query(
        legacy,
        f"INSERT INTO {TABLE} (ts, request_id, model, version, features) "
        "VALUES (now(), 'new', 'm', '1', '{}')",
    )
    assert query(legacy, f"SELECT max(id) FROM {TABLE}") == [(51,)]  # the id sequence carried on


def test_a_foreign_table_of_that_name_is_refused_untouched(postgres_uri: str) -> None:
    uri = fresh_database(postgres_uri, "predlog_foreign")
    query(uri, f"CREATE TABLE {TABLE} (id int, note text)")
    with pytest.raises(SchemaError, match="lacks columns"):
        apply_schema(uri)
    assert query(uri, "SELECT to_regclass('alembic_version')") == [(None,)]  # rolled back, not stamped


def test_the_feedback_revision_keeps_rows_written_at_0001_and_downgrades(postgres_uri: str) -> None:
    """A platform already at 0001 (no stamping) with rows and feedback reaches head; downgrading to
    0001 gives every feedback value back to its prediction's columns."""
    uri = fresh_database(postgres_uri, "predlog_0001")
    engine = sa.create_engine(sqlalchemy_uri(libpq_uri(uri)), poolclass=NullPool)
    with engine.begin() as connection:
        command.upgrade(config(connection), BASELINE)
    engine.dispose()
    query(
        uri,
        f"INSERT INTO {TABLE} (ts, request_id, model, version, features, prediction, actual, feedback_ts) "
        "VALUES (now(), 'a', 'm', '1', '{}', 1.0, 2.0, now()), (now(), 'b', 'm', '1', '{}', 1.0, NULL, NULL)",
    )
    assert apply_schema(uri) == f"schema {head()} (was {BASELINE})"
    assert query(uri, f"SELECT request_id, model, actual FROM {FEEDBACK}") == [("a", "m", 2.0)]
    engine = sa.create_engine(sqlalchemy_uri(libpq_uri(uri)), poolclass=NullPool)
    with engine.begin() as connection:
        command.downgrade(config(connection), BASELINE)
    engine.dispose()
    assert query(uri, f"SELECT request_id, actual FROM {TABLE} ORDER BY request_id") == [
        ("a", 2.0),
        ("b", None),
    ]
