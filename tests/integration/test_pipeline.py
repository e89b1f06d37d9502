"""The CI/CD retraining pipeline (.github/workflows/retrain.yml), step by step, against an ephemeral
local-mode platform: the same make targets the workflow calls, on a real MLflow server."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from contracts import dle, synthetic
from contracts.models import PRODUCTION, STAGING, model_for_target
from services.local import Processes, child_env, start_mlflow
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.integration

WORKFLOW = ROOT / ".github/workflows/retrain.yml"
LATENCY = model_for_target("latency_ms").name


def workflow_make_targets() -> list[str]:
    """Every `make <target>` the workflow's steps run, in order."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    return [m for run in runs for m in re.findall(r"\bmake ([a-z][a-z0-9-]*)", run)]


def test_every_make_target_the_workflow_calls_exists() -> None:
    targets = workflow_make_targets()
    assert {"lint", "test", "pipeline-train", "pipeline-promote"} <= set(targets)
    makefile = (ROOT / "Makefile").read_text()
    missing = [t for t in targets if not re.search(rf"^{re.escape(t)}:", makefile, re.M)]
    assert not missing, f"the workflow calls make targets the Makefile lacks: {missing}"


def test_promotion_needs_the_protected_branch_and_an_approved_environment() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert jobs["promote"]["environment"] == "production"
    assert "refs/heads/main" in jobs["promote"]["if"]
    assert jobs["promote"]["needs"] == "train" and jobs["train"]["needs"] == "test"


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("pipeline")
    procs = Processes(log_dir=base / "logs")
    try:
        yield start_mlflow(procs, f"sqlite:///{base / 'mlflow.db'}", base, free_port())
    finally:
        procs.stop_all()


def make(target: str, tracking: str, workdir: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    env = child_env({"MLFLOW_TRACKING_URI": tracking, "PARTICIPANT": "ci-pipeline"})
    variables["PIPELINE_DIR"] = str(workdir)
    args = [f"{key}={value}" for key, value in variables.items()]
    return subprocess.run(
        ["make", "--no-print-directory", target, *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def test_the_pipeline_gates_registers_and_promotes_only_on_approval(tracking: str, tmp_path: Path) -> None:
    client = MlflowClient(tracking)
    args = "--targets latency_ms --models linear-regression --n-rows 2000"
    trained = make("pipeline-train", tracking, tmp_path, ARGS=args)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
    [decision] = json.loads((tmp_path / "decisions.json").read_text())
    assert decision["model"] == LATENCY and decision["decision"] == "awaiting_approval"
    version = client.get_model_version(LATENCY, decision["version"])
    # The version's run carries its loss estimator, checked on rows it did not see (contracts/dle.py).
    estimator = dle.load(client, version.run_id)
    assert estimator is not None
    assert estimator.estimate(dle.frame_rows(synthetic.generate(50, seed=1)), [30.0] * 50).rows == 50
    figures = json.loads(
        Path(
            client.download_artifacts(version.run_id, "estimator/validation.json", str(tmp_path))
        ).read_text()
    )
    assert figures["dle_val_rmse_relative_error"] < 0.3
    # Registered and judged, staging only: production waits for the approved job.
    assert version.tags["promotion.decision"] == "awaiting_approval"
    assert str(client.get_model_version_by_alias(LATENCY, STAGING).version) == decision["version"]
    assert PRODUCTION not in client.get_registered_model(LATENCY).aliases

    promoted = make("pipeline-promote", tracking, tmp_path)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert str(client.get_model_version_by_alias(LATENCY, PRODUCTION).version) == decision["version"]
    assert client.get_model_version(LATENCY, decision["version"]).tags["promotion.decision"] == "promoted"

    # The same training again: a candidate no better than production is refused and never promoted.
    again = make("pipeline-train", tracking, tmp_path, ARGS=args)
    assert again.returncode == 0, again.stderr[-3000:]
    [refused] = json.loads((tmp_path / "decisions.json").read_text())
    assert refused["decision"] == "not_promoted"
    assert make("pipeline-promote", tracking, tmp_path).returncode == 0
    assert str(client.get_model_version_by_alias(LATENCY, PRODUCTION).version) == decision["version"]
