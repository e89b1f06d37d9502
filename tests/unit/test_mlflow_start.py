"""services/mlflow/start.sh: the schema migration runs, and no secret reaches a command line."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from services.mlflow.app import APP_NAME
from tests.conftest import ROOT

START = ROOT / "services" / "mlflow" / "start.sh"


def test_migrates_then_starts_the_server_without_the_store_uri_on_argv(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"  # this venv's Python: the real migration
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    argv_log = tmp_path / "mlflow-argv"
    fake_mlflow = bin_dir / "mlflow"  # stands in for `mlflow server`: records its arguments
    fake_mlflow.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {argv_log}\n')
    fake_mlflow.chmod(0o755)
    secret = "s3cr3t-Password-in-the-uri"
    store = tmp_path / "mlflow.db"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{store}?secret={secret}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_PROMETHEUS_DIR": str(tmp_path / "metrics"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{tmp_path / 'auth.db'}?secret={secret}",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-" + secret,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-secret-key-" + secret,
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth" / "basic_auth.ini"),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(["sh", str(START)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ini = tmp_path / "auth" / "basic_auth.ini"  # the auth app's config: 0600, closed by default
    assert ini.stat().st_mode & 0o777 == 0o600
    assert "default_permission = NO_PERMISSIONS" in ini.read_text() and secret in ini.read_text()

    with sqlite3.connect(store) as db:  # `mlflow db upgrade` created the schema
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"experiments", "runs", "alembic_version"} <= tables
    server_argv = argv_log.read_text().split()
    assert server_argv[0] == "server" and "--host" in server_argv
    assert server_argv[server_argv.index("--app-name") + 1] == APP_NAME  # services/mlflow/app.py
    assert not any(secret in arg or "sqlite" in arg for arg in server_argv), server_argv
    assert secret not in START.read_text()


@pytest.mark.parametrize("weak", ["", "short", "changeme-please-now", "password1234"])
def test_a_weak_admin_password_stops_the_start_in_one_line(tmp_path: Path, weak: str) -> None:
    env = {
        "PATH": f"/usr/bin{os.pathsep}/bin",
        "MLFLOW_BACKEND_STORE_URI": "sqlite:///x.db",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path),
        "MLFLOW_PROMETHEUS_DIR": str(tmp_path / "metrics"),
        "MLFLOW_AUTH_DATABASE_URI": "sqlite:///auth.db",
        "MLFLOW_AUTH_ADMIN_PASSWORD": weak,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-long-enough-random-key",
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
        "PYTHONPATH": str(ROOT),
    }
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / "python").chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        ["sh", str(START)], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in done.stderr and not (tmp_path / "auth.ini").exists()
