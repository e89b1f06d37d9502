"""services/mlflow/start.sh: the schema migration runs, and no secret reaches a command line."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

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
    }
    done = subprocess.run(["sh", str(START)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    with sqlite3.connect(store) as db:  # `mlflow db upgrade` created the schema
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"experiments", "runs", "alembic_version"} <= tables
    server_argv = argv_log.read_text().split()
    assert server_argv[0] == "server" and "--host" in server_argv
    assert not any(secret in arg or "sqlite" in arg for arg in server_argv), server_argv
    assert secret not in START.read_text()
