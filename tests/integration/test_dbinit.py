"""The database init job against a real PostgreSQL: creates, then is safe to re-run."""

from __future__ import annotations

import subprocess
import sys

import psycopg2
import pytest

from tests.conftest import ROOT, free_port, python_env

pytestmark = pytest.mark.integration


def run_job(uri: str, databases: str) -> subprocess.CompletedProcess[str]:
    env = {
        **python_env(),
        "POSTGRES_ADMIN_URI": uri,
        "POSTGRES_EXTRA_DATABASES": databases,
        "DBINIT_ATTEMPTS": "2",
    }
    return subprocess.run(
        [sys.executable, "-m", "services.dbinit"], env=env, cwd=ROOT, capture_output=True, text=True
    )


def test_creates_missing_databases_then_reruns_safely(postgres_uri: str) -> None:
    first = run_job(postgres_uri, "dbinit_a,dbinit_b")
    again = run_job(postgres_uri, "dbinit_a,dbinit_b")
    assert first.returncode == 0 and again.returncode == 0, first.stderr
    assert "'dbinit_a' created" in first.stdout and "'dbinit_b' created" in first.stdout
    assert "'dbinit_a' exists" in again.stdout and "'dbinit_b' exists" in again.stdout
    with psycopg2.connect(postgres_uri.replace("+psycopg2", "").rsplit("/", 1)[0] + "/dbinit_b") as conn:
        assert conn.status == psycopg2.extensions.STATUS_READY


def test_unreachable_server_is_one_line_and_nonzero() -> None:
    done = run_job(f"postgresql://mlflow@127.0.0.1:{free_port()}/mlflow", "monitoring")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("create-databases: error:") and "Traceback" not in done.stderr
