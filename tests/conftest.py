"""Shared fixtures: real processes only (Postgres, the MLflow server, mlflow models serve)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import requests
from psycopg2 import sql

from contracts.settings import libpq_uri
from services.local import Processes, child_env, postgres_bindir, start_postgres

ROOT = Path(__file__).resolve().parent.parent


def require(what: str, found: object) -> None:
    """Fail, never skip, when a component is missing: `make test` installs the programs the tests
    drive (infra/test-tools.sh), so a skip would only hide a broken setup."""
    if not found:
        pytest.fail(f"{what} is not installed: run `make test-tools` (infra/test-tools.sh)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port; yields an SQLAlchemy URI."""
    require("PostgreSQL server (Debian package postgresql)", postgres_bindir())
    base = tmp_path_factory.mktemp("postgres")
    procs = Processes(log_dir=base / "logs")
    try:
        yield start_postgres(procs, base / "cluster", free_port())
    finally:
        procs.stop_all()


def fresh_database(postgres_uri: str, name: str) -> str:
    """An empty database `name` in the test cluster (dropped first if it exists); returns its URI."""
    conn = psycopg2.connect(libpq_uri(postgres_uri))
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
    return postgres_uri.rsplit("/", 1)[0] + "/" + name


def python_env() -> dict[str, str]:
    """Environment for child processes: this interpreter's bin dir first, telemetry off."""
    return child_env()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto's server mode) on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=python_env(),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(url, timeout=1)
                break
            except requests.RequestException:  # refused, or accepted before it answers
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for the S3 test server (moto accepts any)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-value")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
