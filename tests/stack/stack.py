"""What the stack tests share: the running stack's settings and addresses (from $MLOPS_ENV_FILE,
written by infra/e2e.sh) and small query helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests

from contracts.models import MODEL_NAMES

ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = Path(os.environ.get("MLOPS_ENV_FILE", ROOT / ".env"))
MODELS = MODEL_NAMES
REQUEST = json.loads((ROOT / "docs/examples/predict-request.json").read_text())


def settings() -> dict[str, str]:
    if not os.environ.get("COMPOSE_PROJECT_NAME"):
        pytest.fail("run through `make e2e` (infra/e2e.sh): it starts the stack these tests check")
    lines = ENV_FILE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


ENV = settings()
MLFLOW = f"http://127.0.0.1:{ENV['MLFLOW_PORT']}"
# MLflow asks for a login: the tests' MLflow clients are the admin (MLflow's client reads these);
# tests/stack/test_team_access.py checks participants and anonymous calls.
ADMIN = ("admin", ENV["MLFLOW_AUTH_ADMIN_PASSWORD"])
os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN
SERVING = {
    "latency-predictor": f"http://127.0.0.1:{ENV['SERVING_LATENCY_PORT']}/invocations",
    "bandwidth-efficiency-predictor": f"http://127.0.0.1:{ENV['SERVING_BANDWIDTH_PORT']}/invocations",
}
PROMETHEUS = f"http://127.0.0.1:{ENV['PROMETHEUS_PORT']}"
GATEWAY = f"http://127.0.0.1:{ENV.get('GATEWAY_PORT', '8000')}"
GRAFANA = f"http://127.0.0.1:{ENV['GRAFANA_PORT']}"
REPORTS = f"http://127.0.0.1:{ENV.get('REPORTS_PORT', '8003')}"


def prometheus_query(query: str) -> list[dict[str, object]]:
    response = requests.get(f"{PROMETHEUS}/api/v1/query", params={"query": query}, timeout=10)
    return list(response.json()["data"]["result"])


FAULTS = Path(os.environ.get("FAULT_TIMINGS", "/tmp/mlops-e2e-faults.json"))


def record_fault(fault: str, figures: dict[str, float | int | str]) -> None:
    """Add one fault's figures to $FAULT_TIMINGS (infra/e2e.sh prints them; docs/reliability.md)."""
    recorded = json.loads(FAULTS.read_text()) if FAULTS.exists() else {}
    recorded[fault] = figures
    FAULTS.write_text(json.dumps(recorded, indent=1))
    print(f"\nfault {fault}: {figures}")
