"""Shared fixtures: real processes only (Postgres, the MLflow server, mlflow models serve)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
ON_CI = bool(os.environ.get("CI"))


def require(what: str, found: object) -> None:
    """Skip when a component is missing on a developer machine; fail on CI (nothing skips there)."""
    if found:
        return
    message = f"{what} is not installed"
    if ON_CI:
        pytest.fail(f"{message}: CI must install it (.ci/run)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port; yields an SQLAlchemy URI."""
    bindir = _postgres_bindir()
    require("PostgreSQL server (Debian package postgresql)", bindir)
    assert bindir is not None
    base = tmp_path_factory.mktemp("postgres")
    data, sockets = base / "data", base / "sockets"
    sockets.mkdir()
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
        os.chmod(base.parent, 0o755)
        os.chmod(base.parent.parent, 0o755)
    port = free_port()
    subprocess.run(
        [*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", "-A", "trust", "-E", "UTF8"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = subprocess.Popen(
        [*as_postgres, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            )
            if ready.returncode == 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the test PostgreSQL cluster did not start")
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"],
            check=True,
        )
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        server.terminate()
        server.wait(timeout=30)


def python_env() -> dict[str, str]:
    """Environment for child processes: this interpreter's bin dir first, telemetry off."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


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
            except requests.ConnectionError:
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
