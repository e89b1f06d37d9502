"""The set-up steps this package's docstring lists, each idempotent, as the superuser: `set_up` runs
them in order (`python -m services.dbinit`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from contracts import database as names
from contracts.predlog import GRANTS, RELATIONS, SEQUENCES
from contracts.predlog_migrations import VERSION_TABLE, apply_schema
from contracts.settings import database_uri, libpq_uri
from services.dbinit import Settings

# Settings of the Grafana role's sessions: read-only transactions, and no query that runs for long.
GRAFANA_ROLE_SETTINGS = {"default_transaction_read_only": "on", "statement_timeout": "30s"}


# The objects of a database that a role (the parameter) does not own, as (ALTER keyword, schema,
# name): not the system's, not an extension's. In this order: a table's indexes and sequences move
# with it (moving an owned sequence alone is refused). `public` belongs to pg_database_owner, that is
# to the database's owner: left so.
OWNED_OBJECTS = (
    """SELECT 'SCHEMA', n.nspname, NULL FROM pg_namespace n
       WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%%'
         AND n.nspowner <> 'pg_database_owner'::regrole AND pg_get_userbyid(n.nspowner) <> %s""",
    """SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
              n.nspname, c.relname
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%%'
         AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND pg_get_userbyid(c.relowner) <> %s
         AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')""",
    """SELECT 'SEQUENCE', n.nspname, c.relname
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%%'
         AND c.relkind = 'S' AND pg_get_userbyid(c.relowner) <> %s
         AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')""",
    """SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, t.typname
       FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
       WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%%'
         AND t.typtype IN ('e', 'd', 'r') AND pg_get_userbyid(t.typowner) <> %s
         AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')""",
)


class SetupError(Exception):
    """A setting that makes the set-up impossible (one line for the operator)."""


@contextmanager
def admin_cursor(admin_uri: str, database: str | None = None, attempts: int = 10) -> Iterator[Any]:
    """An autocommit cursor as the superuser, retried while Postgres starts."""

    @retry(
        retry=retry_if_exception_type(psycopg2.OperationalError),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=5),
        reraise=True,
    )
    def connect() -> psycopg2.extensions.connection:
        uri = libpq_uri(database_uri(admin_uri, database) if database else admin_uri)
        return psycopg2.connect(uri, application_name="create-databases")

    conn = connect()
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def ensure_databases(cur: Any) -> dict[str, bool]:
    """Create each missing platform database; returns name -> created."""
    created = {}
    for name in names.DATABASES:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        created[name] = cur.fetchone() is None
        if created[name]:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return created


def ensure_roles(cur: Any, passwords: dict[str, str]) -> dict[str, bool]:
    """Create or update each service's login role: no superuser, no CREATEDB/CREATEROLE, the
    password from .env (sent SCRAM-hashed, never in clear). Returns role -> created."""
    cur.execute("SELECT current_user")
    admin = cur.fetchone()[0]
    if admin in passwords:
        raise SetupError(
            f"POSTGRES_USER is {admin!r}, the name of a service's role: choose another superuser name"
        )
    created = {}
    for role, password in passwords.items():
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        created[role] = cur.fetchone() is None
        verb = "CREATE" if created[role] else "ALTER"
        hashed = psycopg2.extensions.encrypt_password(password, role, cur.connection)
        cur.execute(
            sql.SQL(
                "{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %s"
            ).format(sql.SQL(verb), sql.Identifier(role)),
            (hashed,),
        )
    grafana = sql.Identifier(names.GRAFANA_ROLE)
    for key, value in GRAFANA_ROLE_SETTINGS.items():
        cur.execute(sql.SQL("ALTER ROLE {} SET {} = %s").format(grafana, sql.Identifier(key)), (value,))
    return created


def restrict_databases(cur: Any) -> None:
    """MLflow's role owns its databases; a role connects only where it has work (no PUBLIC access)."""
    cur.execute("SELECT datname FROM pg_database WHERE datname = 'postgres'")
    for name in [*names.DATABASES, *(row[0] for row in cur.fetchall())]:
        cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
    for name in (names.MLFLOW_DATABASE, names.AUTH_DATABASE):
        cur.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(name), sql.Identifier(names.MLFLOW_ROLE)
            )
        )
    grants = {
        names.MONITORING_DATABASE: tuple(GRANTS),
        names.MLFLOW_DATABASE: (names.GRAFANA_ROLE,),
    }
    for database, roles in grants.items():
        cur.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(database), sql.SQL(", ").join(map(sql.Identifier, roles))
            )
        )


def hand_over(cur: Any, owner: str) -> int:
    """Make `owner` the owner of every schema, table, view, sequence and type of the current database
    (indexes follow their table); object by object, since REASSIGN OWNED cannot move a bootstrap
    superuser's system objects. Returns how many objects changed owner."""
    moved = 0
    for found in OWNED_OBJECTS:  # in this order: a table's sequences move with it, never alone
        cur.execute(found, (owner,))
        for kind, schema, name in cur.fetchall():
            target = sql.Identifier(schema, name) if name else sql.Identifier(schema)
            cur.execute(
                sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kind), target, sql.Identifier(owner))
            )
            moved += 1
    return moved


def grant_prediction_log(cur: Any) -> None:
    """In `monitoring` (owned by the superuser): each service's role gets exactly its GRANTS on the
    prediction log (contracts/predlog.py) and nothing else: no DDL, not the migrations' version table.
    One transaction: no gap."""
    roles = sql.SQL(", ").join([sql.SQL("PUBLIC"), *map(sql.Identifier, GRANTS)])
    cur.execute("BEGIN")
    cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    for relation in (*RELATIONS, VERSION_TABLE):
        cur.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(relation), roles))
    for role, grants in GRANTS.items():
        for relation, privileges in grants.items():
            cur.execute(
                sql.SQL("GRANT {} ON {} TO {}").format(
                    sql.SQL(privileges), sql.Identifier(relation), sql.Identifier(role)
                )
            )
    for sequence, users in SEQUENCES.items():
        cur.execute(sql.SQL("REVOKE ALL ON SEQUENCE {} FROM {}").format(sql.Identifier(sequence), roles))
        for role in users:
            cur.execute(
                sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
                    sql.Identifier(sequence), sql.Identifier(role)
                )
            )
    cur.execute("COMMIT")


def set_up(settings: Settings) -> list[str]:
    """Everything above, in order; returns one line per step for the job's log."""
    lines = []
    with admin_cursor(settings.postgres.admin_uri, attempts=settings.attempts) as cur:
        for name, new in ensure_databases(cur).items():
            lines.append(f"database {name!r} {'created' if new else 'exists'}")
        for role, new in ensure_roles(cur, settings.passwords()).items():
            lines.append(f"role {role!r} {'created' if new else 'exists'} (password from .env applied)")
        restrict_databases(cur)
    for database in (names.MLFLOW_DATABASE, names.AUTH_DATABASE):
        with admin_cursor(settings.postgres.admin_uri, database, settings.attempts) as cur:
            cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            moved = hand_over(cur, names.MLFLOW_ROLE)
        lines.append(f"{database}: owned by {names.MLFLOW_ROLE!r} ({moved} objects handed over)")
    schema = apply_schema(database_uri(settings.postgres.admin_uri, names.MONITORING_DATABASE))
    with admin_cursor(settings.postgres.admin_uri, names.MONITORING_DATABASE, settings.attempts) as cur:
        grant_prediction_log(cur)
    lines.append(
        f"{names.MONITORING_DATABASE}: prediction log {schema}; {names.GATEWAY_ROLE!r} writes, "
        f"{names.MONITOR_ROLE!r} and {names.ORCHESTRATOR_ROLE!r} read"
    )
    return lines
