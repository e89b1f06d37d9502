"""`make local`: the whole platform as processes, no Docker; curl gets predictions; Ctrl-C stops all."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port, python_env

pytestmark = pytest.mark.integration


def test_local_mode_trains_serves_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("mlflow", "latency", "bandwidth", "prometheus")}
    cmd = [
        sys.executable, "-m", "services.local", "--data-dir", str(tmp_path),
        "--mlflow-port", str(ports["mlflow"]), "--latency-port", str(ports["latency"]),
        "--bandwidth-port", str(ports["bandwidth"]), "--prometheus-port", str(ports["prometheus"]),
        "--", "--n-rows", "2000", "--models", "lr,rf",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 400
        for line in proc.stdout:
            output.append(line)
            if "Ctrl-C stops it" in line or time.monotonic() > deadline:
                break
        assert any("Ctrl-C stops it" in line for line in output), "".join(output[-40:])

        body = json.loads((ROOT / "docs/examples/predict-request.json").read_text())
        for model in ("latency", "bandwidth"):
            response = requests.post(f"http://127.0.0.1:{ports[model]}/invocations", json=body, timeout=30)
            assert response.status_code == 200, response.text
            assert len(response.json()["predictions"]) == len(body["dataframe_records"])
        assert requests.get(f"http://127.0.0.1:{ports['mlflow']}/health", timeout=5).ok
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    for port in ports.values():  # every child process is gone
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
