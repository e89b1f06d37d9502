"""Create the platform's extra PostgreSQL databases if they are missing (idempotent).

The postgres image creates MLflow's database on first start only; databases added later
(`monitoring` for the prediction log, more to come) must also appear on existing volumes.
"""

from __future__ import annotations

import psycopg2
from psycopg2 import sql
from pydantic import Field
from pydantic_settings import BaseSettings
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from contracts.settings import CommaList, libpq_uri


class Settings(BaseSettings):
    # Any database the user may connect to; CREATE DATABASE runs from there.
    admin_uri: str = Field(alias="POSTGRES_ADMIN_URI")
    databases: CommaList = Field(["monitoring"], alias="POSTGRES_EXTRA_DATABASES")
    attempts: int = Field(10, alias="DBINIT_ATTEMPTS")


def ensure_databases(settings: Settings) -> dict[str, bool]:
    """Create each missing database; returns name -> created."""

    @retry(
        retry=retry_if_exception_type(psycopg2.OperationalError),
        stop=stop_after_attempt(settings.attempts),
        wait=wait_exponential(multiplier=0.5, max=5),
        reraise=True,
    )
    def connect() -> psycopg2.extensions.connection:
        return psycopg2.connect(libpq_uri(settings.admin_uri))

    created = {}
    conn = connect()
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            for name in settings.databases:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                created[name] = cur.fetchone() is None
                if created[name]:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
    return created
