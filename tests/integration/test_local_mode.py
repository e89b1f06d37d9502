"""`make local`: the whole platform as processes, no Docker; curl gets predictions through the
gateway, as in the compose stack; Ctrl-C stops all."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from contracts.models import MODEL_NAMES
from tests.conftest import ROOT, free_port, python_env

pytestmark = pytest.mark.integration


def test_local_mode_trains_serves_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {
        name: free_port()
        for name in ("mlflow", "latency", "bandwidth", "gateway", "monitor", "orchestrator", "prometheus")
    }
    cmd = [
        sys.executable, "-m", "services.local", "--data-dir", str(tmp_path),
        *(arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))),
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
        records = body["dataframe_records"]
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        for name in MODEL_NAMES:  # through the gateway, as users call the compose stack
            response = requests.post(
                f"{gateway}/models/{name}/predict", json={"records": records}, timeout=30
            )
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["version"] == "1"
            assert len(answer["predictions"]) == len(answer["request_ids"]) == len(records)
        assert "gateway_requests_total" in requests.get(f"{gateway}/metrics", timeout=5).text
        for model in ("latency", "bandwidth"):  # the model servers behind it
            response = requests.post(f"http://127.0.0.1:{ports[model]}/invocations", json=body, timeout=30)
            assert response.status_code == 200, response.text
            assert len(response.json()["predictions"]) == len(records)
        assert requests.get(f"http://127.0.0.1:{ports['mlflow']}/health", timeout=5).ok
        assert requests.get(f"http://127.0.0.1:{ports['monitor']}/health", timeout=5).ok
        # The orchestrator takes a retraining on demand; without a prediction log it records why it
        # has nothing to learn from instead of failing.
        # It needs the control token local mode generated (0600), as the stack's orchestrator does.
        orchestrator = f"http://127.0.0.1:{ports['orchestrator']}"
        token = tmp_path / "control_token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        anonymous = requests.post(f"{orchestrator}/retrain", json={"model": MODEL_NAMES[0]}, timeout=10)
        assert anonymous.status_code == 401, anonymous.text
        authorized = {"Authorization": f"Bearer {token.read_text().strip()}"}
        asked = requests.post(
            f"{orchestrator}/retrain", json={"model": MODEL_NAMES[0]}, headers=authorized, timeout=10
        )
        assert asked.status_code == 202, asked.text
        deadline = time.monotonic() + 60
        while requests.get(f"{orchestrator}/retrainings", timeout=5).json()[MODEL_NAMES[0]]["busy"]:
            assert time.monotonic() < deadline, "the retraining did not end"
            time.sleep(0.5)
        skipped = (
            'orchestrator_retrainings_total{model="latency-predictor",outcome="skipped",trigger="manual"} 1.0'
        )
        assert skipped in requests.get(f"{orchestrator}/metrics", timeout=5).text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    for port in ports.values():  # every child process is gone
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
