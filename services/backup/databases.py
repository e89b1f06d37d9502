"""PostgreSQL side: consistent dumps with exact row counts, restores, and the emptiness check.

Each database is dumped inside one exported snapshot: a REPEATABLE READ transaction exports it,
counts every table's rows and reads the schema revisions, and `pg_dump --snapshot` dumps exactly that
state. So the manifest's counts are the dump's counts, however busy the platform is.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess  # nosec B404  (pg_dump/pg_restore: argument lists, never a shell)
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import ISOLATION_LEVEL_REPEATABLE_READ, parse_dsn

from contracts.settings import libpq_uri
from services.backup.archive import BackupError

# Tables that hold MLflow's user data: a target with rows there is not empty.
MLFLOW_DATA_TABLES = ("runs", "registered_models", "logged_models")


@dataclass(frozen=True)
class Server:
    """How to reach the cluster: libpq parameters from POSTGRES_ADMIN_URI (password never on argv)."""

    params: dict[str, str]

    @classmethod
    def from_uri(cls, uri: str) -> Server:
        try:
            params = parse_dsn(libpq_uri(uri))
        except psycopg2.ProgrammingError:
            raise BackupError("POSTGRES_ADMIN_URI is not a valid PostgreSQL URI") from None
        return cls({k: v for k, v in params.items() if v})

    def connect(self, database: str) -> psycopg2.extensions.connection:
        return psycopg2.connect(**{**self.params, "dbname": database})

    def env(self, database: str) -> dict[str, str]:
        """Environment for pg_dump/pg_restore: libpq reads the connection (and password) from it."""
        names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD"}  # nosec B105
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({names[k]: v for k, v in self.params.items() if k in names})
        env["PGDATABASE"] = database
        return env

    @property
    def admin_database(self) -> str:
        return self.params.get("dbname", "postgres")

    @contextmanager
    def cursor(self, database: str | None = None) -> Iterator[Any]:
        """A cursor in autocommit mode on `database` (default: the URI's); the connection closes after."""
        conn = self.connect(database or self.admin_database)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()


# The cluster's own database: where databases are dropped, created and renamed from.
MAINTENANCE_DATABASE = "postgres"
RESTORING_SUFFIX = "_restoring"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (Debian package postgresql-client-15)")
    return found


def tool_version(name: str) -> str:
    done = subprocess.run([tool(name), "--version"], capture_output=True, text=True, check=False)  # nosec B603
    return done.stdout.strip()


def major(version: str) -> int:
    match = re.search(r"(\d+)", version)
    return int(match.group(1)) if match else 0


def list_databases(server: Server) -> list[str]:
    """Every user database of the cluster (not the templates, not `postgres`)."""
    with server.cursor() as cur:
        cur.execute(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
            "AND datname <> 'postgres' ORDER BY datname"
        )
        return [str(row[0]) for row in cur.fetchall()]


def server_version(server: Server) -> str:
    with server.cursor() as cur:
        cur.execute("SHOW server_version")
        return str(cur.fetchone()[0])


def _tables(cur: Any) -> list[tuple[str, str]]:
    cur.execute(
        "SELECT schemaname, tablename FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
    )
    return [(str(s), str(t)) for s, t in cur.fetchall()]


def table_counts(cur: Any) -> dict[str, int]:
    """`schema.table` -> exact row count, for every table of the current database."""
    counts = {}
    for schema, table in _tables(cur):
        cur.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        )
        counts[f"{schema}.{table}"] = int(cur.fetchone()[0])
    return counts


def schema_revisions(cur: Any) -> dict[str, str]:
    """Alembic revisions: `alembic_version` (MLflow's store), `alembic_version_auth` (its users)."""
    revisions = {}
    for schema, table in _tables(cur):
        if schema == "public" and table.startswith("alembic_version"):
            cur.execute(sql.SQL("SELECT version_num FROM {}").format(sql.Identifier(table)))
            revisions[table] = ",".join(sorted(str(row[0]) for row in cur.fetchall()))
    return revisions


def dump(server: Server, database: str, target: Path) -> dict[str, Any]:
    """pg_dump `database` to `target` (custom format); returns its table counts and schema revisions,
    read in the same snapshot as the dump."""
    conn = server.connect(database)
    try:
        conn.set_session(isolation_level=ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = str(cur.fetchone()[0])
            counts, revisions = table_counts(cur), schema_revisions(cur)
        # The snapshot stays valid while this transaction is open, so pg_dump sees exactly it.
        command = [tool("pg_dump"), "--format=custom", f"--snapshot={snapshot}", "--no-password",
                   f"--file={target}"]  # fmt: skip
        done = subprocess.run(command, env=server.env(database), capture_output=True, text=True, check=False)  # nosec B603
        if done.returncode != 0:
            raise BackupError(f"pg_dump of {database} failed: {first_line(done.stderr)}")
    finally:
        conn.rollback()
        conn.close()
    return {"tables": counts, "schema_revisions": revisions}


def first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[0].strip()


def ensure_database(server: Server, database: str) -> bool:
    """Create `database` unless it exists; True when created."""
    if database_exists(server, database):
        return False
    with server.cursor() as cur:  # autocommit: CREATE DATABASE cannot run in a transaction
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return True


def database_exists(server: Server, database: str) -> bool:
    with server.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        return cur.fetchone() is not None


def restore(server: Server, database: str, dump_file: Path) -> None:
    """Put the dump in place of `database`: restored into a new database first (one transaction),
    then swapped in. So the target's objects never meet the archive's (an archive from an older
    schema restores onto a newer one: `--clean` cannot drop a table that a newer view depends on),
    and a failed restore leaves the target as it was. Objects get the restoring user as owner, so
    the archive restores on a cluster with another POSTGRES_USER; the create-databases job hands
    them over and grants at the next start."""
    scratch = f"{database}{RESTORING_SUFFIX}"
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
    with server.cursor(MAINTENANCE_DATABASE) as cur:  # never connected to what it drops
        cur.execute(drop.format(sql.Identifier(scratch)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    command = [tool("pg_restore"), "--no-owner", "--no-acl", "--single-transaction", "--exit-on-error",
               "--no-password", f"--dbname={scratch}", str(dump_file)]  # fmt: skip
    done = subprocess.run(command, env=server.env(scratch), capture_output=True, text=True, check=False)  # nosec B603
    with server.cursor(MAINTENANCE_DATABASE) as cur:
        if done.returncode != 0:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
            raise BackupError(
                f"pg_restore of {database} failed (target untouched): {first_line(done.stderr)}"
            )
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        cur.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(scratch), sql.Identifier(database)
            )
        )


def counts(server: Server, database: str) -> dict[str, int]:
    with server.cursor(database) as cur:
        return table_counts(cur)


def user_data(server: Server, database: str, mlflow_database: str) -> str | None:
    """What makes `database` non-empty as a restore target, or None: MLflow's runs, registered models
    or logged models (its own Default experiment is no data); in any other database, rows in any
    table but the schema-version ones."""
    if not database_exists(server, database):
        return None
    found = counts(server, database)
    if database == mlflow_database:
        tables = [f"public.{name}" for name in MLFLOW_DATA_TABLES]
    else:
        tables = [table for table in found if not table.split(".", 1)[1].startswith("alembic_version")]
    rows = [f"{found[t]} {t.split('.', 1)[1]}" for t in tables if found.get(t)]
    return f"{database}: {', '.join(rows)}" if rows else None
