"""Compiled serving in the running stack: every production version answers in its ONNX form, equal
to its scikit-learn pipeline within the tolerance recorded on the version, and each serving
container's memory is measured (written to $SERVING_MEMORY, default /tmp/mlops-e2e-serving-memory.json).

Runs after the closed loop's retrainings (tests/stack/test_closed_loop.py), so the versions checked
here were trained by the trainer container, some of them started by the orchestrator.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pytest
import requests
from mlflow.tracking import MlflowClient

from contracts import synthetic
from contracts.models import MODELS as REGISTERED
from contracts.schema import FEATURE_NAMES
from tests.stack.stack import GATEWAY, MLFLOW, MODELS, ROOT


@pytest.fixture(scope="module")
def client() -> MlflowClient:
    mlflow.set_tracking_uri(MLFLOW)
    return MlflowClient(MLFLOW)


def tolerance(tags: dict[str, str]) -> tuple[float, float]:
    """(rtol, atol) from the version's `onnx.tolerance` tag, `rtol=0.0001,atol=1e-06`."""
    parts = dict(item.split("=") for item in tags["onnx.tolerance"].split(","))
    return float(parts["rtol"]), float(parts["atol"])


@pytest.mark.parametrize("name", MODELS)
def test_the_served_version_answers_in_its_onnx_form_like_its_pipeline(
    client: MlflowClient, name: str
) -> None:
    rows = synthetic.generate(300, seed=11)[list(FEATURE_NAMES)]
    response = requests.post(
        f"{GATEWAY}/models/{name}/predict", json={"records": rows.to_dict(orient="records")}, timeout=60
    )
    assert response.status_code == 200, response.text
    body = response.json()
    tags = client.get_model_version(name, body["version"]).tags
    assert tags["serving.form"] == "onnx", tags.get("onnx.error")
    # The scikit-learn form, downloaded through the server's artifact proxy like a participant would.
    pipeline = mlflow.sklearn.load_model(tags["sklearn_model_uri"])
    rtol, atol = tolerance(tags)
    np.testing.assert_allclose(np.asarray(body["predictions"]), pipeline.predict(rows), rtol=rtol, atol=atol)


def mebibytes(amount: str) -> float:
    """A `docker stats` amount, '312.5MiB' -> 312.5."""
    value, unit = re.match(r"([\d.]+)\s*([KMG]i?B)", amount.strip()).groups()  # type: ignore[union-attr]
    return float(value) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "KB": 1 / 1000, "MB": 1, "GB": 1000}[unit]


def test_each_serving_container_leaves_room_for_a_rollout_within_its_limit() -> None:
    """A rollout holds two versions for a moment: each container must use under half its limit."""
    measured, limits = {}, {}
    for model in REGISTERED:
        ids = subprocess.run(
            ["docker", "compose", "ps", "-q", model.service],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        assert ids, f"{model.service} is not running"
        usage = subprocess.run(
            ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", ids[0]],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        used, limit = usage.split("/")
        measured[model.service], limits[model.service] = round(mebibytes(used), 1), mebibytes(limit)
    out = Path(os.environ.get("SERVING_MEMORY", "/tmp/mlops-e2e-serving-memory.json"))
    out.write_text(json.dumps(measured, indent=2) + "\n")
    print(f"serving containers' memory (MiB): {measured}")
    for service, mib in measured.items():
        assert mib < limits[service] / 2, f"{service} holds {mib} MiB of its {limits[service]:.0f} MiB limit"
