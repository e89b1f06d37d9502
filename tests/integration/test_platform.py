"""trainer -> MLflow server on Postgres -> registry -> mlflow models serve -> predictions.

Everything here is a real process on loopback: PostgreSQL, `mlflow server`, `python -m trainer`,
`mlflow models serve` (through our launcher). Nothing is mocked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pytest
import requests
import skops.io
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from contracts import drift, synthetic
from contracts.models import served_version
from contracts.schema import FEATURE_NAMES
from services.local import Processes, start_mlflow, start_serving, wait_http
from tests.conftest import ROOT, free_port, python_env
from trainer import data

pytestmark = pytest.mark.integration

MODELS = {"latency_ms": "latency-predictor", "bandwidth_efficiency": "bandwidth-efficiency-predictor"}
ESTIMATORS = {
    "linear-regression": "sklearn.linear_model.LinearRegression",
    "random-forest": "sklearn.ensemble.RandomForestRegressor",
}
PARTICIPANT = "alice"
PUBLIC_URL = "http://localhost:5999"  # where a browser would reach MLflow (MLFLOW_PUBLIC_URL)
ML_VIEW = "?workflowType=machine_learning"  # the UI's model-training view (contracts/experiments.py)


@dataclass
class Platform:
    tracking_uri: str
    client: MlflowClient
    procs: Processes
    first_training: subprocess.CompletedProcess[str]


def train(tracking_uri: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainer", "--participant", PARTICIPANT, *args],
        env={**python_env(), "MLFLOW_TRACKING_URI": tracking_uri, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def platform(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data_dir = tmp_path_factory.mktemp("platform")
    procs = Processes(log_dir=data_dir / "logs")
    try:
        tracking = start_mlflow(procs, postgres_uri, data_dir, free_port())
        # Short model names still work; the public URL is only printed, never contacted.
        first = train(tracking, "--n-rows", "3000", "--models", "lr,rf", MLFLOW_PUBLIC_URL=PUBLIC_URL)
        assert first.returncode == 0, first.stderr[-3000:]
        mlflow.set_tracking_uri(tracking)
        yield Platform(tracking, MlflowClient(tracking), procs, first)
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def served(platform: Platform) -> dict[str, str]:
    """Both models served by `mlflow models serve` on free ports: target -> invocations URL."""
    urls = {}
    for target, name in MODELS.items():
        port = free_port()
        proc = start_serving(platform.procs, platform.tracking_uri, name, port)
        wait_http(f"http://127.0.0.1:{port}/ping", proc, 180, f"serving {name}")
        urls[target] = f"http://127.0.0.1:{port}/invocations"
    return urls


def children(platform: Platform) -> list[mlflow.entities.Run]:
    experiment = platform.client.get_experiment_by_name(PARTICIPANT)
    assert experiment is not None, "the participant's experiment was not created"
    runs = platform.client.search_runs([experiment.experiment_id], max_results=100)
    # Candidate runs: children with a `model` param (the promotion gate's evaluations are children too).
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags and "model" in r.data.params]


def test_first_session_registers_and_promotes_both_models(platform: Platform) -> None:
    for target, name in MODELS.items():
        staging = platform.client.get_model_version_by_alias(name, "staging")
        production = platform.client.get_model_version_by_alias(name, "production")
        assert staging.version == production.version == "1", name
        assert production.tags["promotion.decision"] == "promoted"
        assert production.tags["promotion.production_test_rmse"] == ""
        assert float(production.tags["promotion.candidate_test_rmse"]) > 0
        assert production.tags["target"] == target
        assert "no production version yet" in (production.description or "")


def test_every_candidate_run_is_complete(platform: Platform) -> None:
    runs = children(platform)
    assert len(runs) == 4  # linear regression and random forest for two targets
    for run in runs:
        metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
        assert run.info.run_name == f"{params['model']}-{params['target']}"  # random-forest-latency_ms
        for split in ("val", "test"):
            for metric in ("mae", "rmse", "r2"):
                assert np.isfinite(metrics[f"{split}_{metric}"]), (run.info.run_name, split, metric)
        assert metrics["resource/cpu_seconds"] > 0 and metrics["resource/peak_rss_megabytes"] > 50
        # MLflow samples system metrics every 0.5 s: long runs have them.
        if params["model"] == "random-forest":
            assert "system/cpu_utilization_percentage" in metrics
            assert "system/system_memory_usage_megabytes" in metrics
        assert params["model"] in ESTIMATORS and params["target"] in MODELS
        assert params["estimator_class"] == ESTIMATORS[params["model"]]
        assert params["n_rows"] == "3000" and params["seed"] == "42"
        assert params["preprocessing.numeric"] == "StandardScaler"
        for tag in ("git_commit", "platform_version", "data_source", "participant"):
            assert tag in tags, tag
        [dataset_input] = run.inputs.dataset_inputs
        assert dataset_input.dataset.digest and "network-telemetry" in dataset_input.dataset.name


def test_the_forest_wins_latency_and_both_scores_are_in_the_runs(platform: Platform) -> None:
    runs = {(r.data.params["model"], r.data.params["target"]): r for r in children(platform)}
    assert (
        runs[("random-forest", "latency_ms")].data.metrics["test_rmse"]
        < runs[("linear-regression", "latency_ms")].data.metrics["test_rmse"]
    )
    registered = platform.client.get_model_version_by_alias(MODELS["latency_ms"], "production")
    assert registered.tags["model"] == "random-forest"
    assert registered.tags["estimator_class"] == "sklearn.ensemble.RandomForestRegressor"


def test_the_printed_links_use_the_public_url(platform: Platform) -> None:
    """In the stack the tracking URI is http://mlflow:5000, which no browser resolves: every link the
    trainer prints starts with MLFLOW_PUBLIC_URL, and MLflow's own links (tracking URI) are off."""
    out = platform.first_training.stdout
    experiment = platform.client.get_experiment_by_name(PARTICIPANT)
    assert experiment is not None
    runs = f"{PUBLIC_URL}/#/experiments/{experiment.experiment_id}/runs"
    assert f"  experiment: {runs}{ML_VIEW}" in out.splitlines()
    best = platform.client.get_model_version_by_alias(MODELS["latency_ms"], "production").run_id
    assert f"  best run: {runs}/{best}{ML_VIEW}" in out
    assert "latency_ms: best random-forest -> v1 (production)" in out
    assert platform.tracking_uri not in out and "View run" not in out


def test_artifacts_download_through_the_server(platform: Platform, tmp_path: Path) -> None:
    run = next(r for r in children(platform) if r.data.params["model"] == "random-forest")
    plots = {a.path for a in platform.client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/predicted_vs_actual.png", "plots/residuals.png", "plots/feature_importance.png"}
    profile = platform.client.download_artifacts(run.info.run_id, drift.PROFILE_ARTIFACT, str(tmp_path))
    reference = json.loads(Path(profile).read_text())
    assert set(reference["numeric"]) | set(reference["categorical"]) == set(FEATURE_NAMES)
    assert reference["n_rows"] == int(run.data.params["n_train"])
    png = Path(platform.client.download_artifacts(run.info.run_id, "plots/residuals.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pre = Path(
        platform.client.download_artifacts(run.info.run_id, "preprocessor/preprocessor.skops", str(tmp_path))
    )
    preprocessor = skops.io.load(pre, trusted=skops.io.get_untrusted_types(file=pre))
    assert preprocessor.transform(synthetic.generate(3)[list(FEATURE_NAMES)]).shape[0] == 3


def _request(rows: int = 3, seed: int = 99) -> tuple[dict[str, object], object]:
    frame = synthetic.generate(rows, seed=seed)[list(FEATURE_NAMES)]
    return {"dataframe_records": frame.to_dict(orient="records")}, frame


@pytest.mark.parametrize("target", list(MODELS))
def test_served_prediction_equals_the_models_local_predict(platform: Platform, served, target: str) -> None:  # type: ignore[no-untyped-def]
    payload, frame = _request()
    response = requests.post(served[target], json=payload, timeout=30)
    assert response.status_code == 200, response.text
    remote = np.asarray(response.json()["predictions"], dtype=float)
    local = mlflow.pyfunc.load_model(f"models:/{MODELS[target]}@production").predict(frame)
    np.testing.assert_allclose(remote, np.asarray(local, dtype=float), rtol=1e-9)


@pytest.mark.parametrize("target", list(MODELS))
def test_the_served_form_is_onnx_and_predicts_the_pipelines_whole_test_set(
    platform: Platform, served: dict[str, str], target: str
) -> None:
    """Issue 10's equality target: the served ONNX form against the scikit-learn pipeline logged on
    the same run, over the session's whole test set, within the tolerance recorded on the version."""
    version = platform.client.get_model_version_by_alias(MODELS[target], "production")
    tags = version.tags
    assert tags["serving.form"] == "onnx", tags.get("onnx.error")
    tolerance = dict(item.split("=") for item in tags["onnx.tolerance"].split(","))
    rtol, atol = float(tolerance["rtol"]), float(tolerance["atol"])
    _, _, test = data.split(synthetic.generate(3000, seed=42), 42)  # the first session's data
    frame = test[list(FEATURE_NAMES)]
    assert int(tags["onnx.rows_checked"]) == len(frame)
    response = requests.post(
        served[target], json={"dataframe_split": frame.to_dict(orient="split", index=False)}, timeout=60
    )
    assert response.status_code == 200, response.text
    remote = np.asarray(response.json()["predictions"], dtype=float)
    pipeline = mlflow.sklearn.load_model(tags["sklearn_model_uri"])
    np.testing.assert_allclose(remote, pipeline.predict(frame), rtol=rtol, atol=atol)
    assert float(tags["onnx.max_rel_error"]) <= rtol
    # Both forms are logged models of the version's run; the version is the ONNX one.
    logged = {
        m.name: m
        for m in platform.client.search_logged_models([version_run_experiment(platform, version)])
        if m.source_run_id == version.run_id
    }
    assert {"model", "model-onnx"} <= set(logged)
    assert version.source == f"models:/{logged['model-onnx'].model_id}"
    assert tags["sklearn_model_uri"] == f"models:/{logged['model'].model_id}"


def version_run_experiment(platform: Platform, version: Any) -> str:
    return str(platform.client.get_run(version.run_id).info.experiment_id)


BAD_REQUESTS = {
    "malformed JSON": ('{"dataframe_records": [', "JSON"),
    "missing column": (json.dumps({"dataframe_records": [{"distance_km": 10.0}]}), "hop_count"),
    "wrong type": (None, "distance_km"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_4xx_naming_the_problem(served, case: str) -> None:  # type: ignore[no-untyped-def]
    body, expected = BAD_REQUESTS[case]
    if body is None:
        payload, _ = _request(1)
        payload["dataframe_records"][0]["distance_km"] = "far away"  # type: ignore[index]
        body = json.dumps(payload)
    response = requests.post(
        served["latency_ms"], data=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert expected in response.json()["message"]


def test_worse_candidate_goes_to_staging_but_not_production(platform: Platform) -> None:
    second = train(platform.tracking_uri, "--n-rows", "3000", "--models", "lr", "--targets", "latency_ms")
    assert second.returncode == 0, second.stderr[-3000:]
    name = MODELS["latency_ms"]
    staging = platform.client.get_model_version_by_alias(name, "staging")
    production = platform.client.get_model_version_by_alias(name, "production")
    assert (staging.version, production.version) == ("2", "1")
    assert staging.tags["promotion.decision"] == "not_promoted"
    assert staging.tags["promotion.compared_with_version"] == "1"
    assert float(staging.tags["promotion.candidate_test_rmse"]) > float(
        staging.tags["promotion.production_test_rmse"]
    )
    assert "Kept in staging" in (staging.description or "")
    reason = staging.tags["promotion.reason"]
    assert "vs production v1" in reason and "not better" in reason


class Hammer:
    """Posts `payload` to `url` back to back in a thread; records every answer (its predictions and
    its X-Model-Version) or failure.

    A request closed before any answer is repeated once, as the gateway does
    (services/gateway/upstream.py): a stopping model server closes the connections it accepted but
    had not read yet (uvicorn's shutdown; services/serving/__init__.py names the race), and a
    keep-alive connection it closed can be reset under a request already sent. `repeated` counts
    them; a refused connection, or a request that fails again, is a failure."""

    def __init__(self, url: str, payload: dict[str, object]) -> None:
        self.answers: list[list[float]] = []
        self.versions: list[str] = []
        self.failures: list[str] = []
        self.repeated = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, payload), daemon=True)
        self._thread.start()

    def _run(self, url: str, payload: dict[str, object]) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    try:
                        answer = session.post(url, json=payload, timeout=60)
                    except requests.ConnectionError as exc:
                        if "refused" in str(exc):  # no server listening: what the launcher prevents
                            raise
                        self.repeated += 1
                        answer = session.post(url, json=payload, timeout=60)
                    if answer.status_code == 200:
                        self.answers.append(answer.json()["predictions"])
                        self.versions.append(answer.headers.get("X-Model-Version", ""))
                    else:
                        self.failures.append(f"HTTP {answer.status_code}: {answer.text[:200]}")
                except requests.RequestException as exc:
                    self.failures.append(repr(exc))

    def wait_for(self, expected: np.ndarray, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not (self.answers and np.allclose(self.answers[-1], expected, rtol=1e-9)):
            assert time.monotonic() < deadline, "serving never answered with the expected version"
            assert not self.failures, self.failures[:3]
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def server_of(invocations_url: str) -> str:
    return invocations_url.removesuffix("/invocations")


def test_serving_rolls_to_the_new_production_version_without_refusing_a_request(
    platform: Platform, served
) -> None:  # type: ignore[no-untyped-def]
    name = MODELS["latency_ms"]
    payload, frame = _request(rows=5, seed=5)
    old, new = (
        np.asarray(mlflow.pyfunc.load_model(f"models:/{name}/{v}").predict(frame), dtype=float) for v in "12"
    )
    assert served_version(server_of(served["latency_ms"])) == "1"
    hammer = Hammer(served["latency_ms"], payload)
    try:
        platform.client.set_registered_model_alias(name, "production", "2")
        hammer.wait_for(new)
        platform.client.set_registered_model_alias(name, "production", "1")
        hammer.wait_for(old)
    finally:
        platform.client.set_registered_model_alias(name, "production", "1")
        hammer.stop()
    assert hammer.failures == []
    assert hammer.repeated <= 4, f"{hammer.repeated} requests closed without an answer in two rollouts"
    assert all(np.allclose(a, old, rtol=1e-9) or np.allclose(a, new, rtol=1e-9) for a in hammer.answers)
    assert served_version(server_of(served["latency_ms"])) == "1"


def make_unloadable() -> PythonModel:
    class CannotLoad(PythonModel):  # defined here: pickled by value, not by reference
        def load_context(self, context: Any) -> None:
            raise RuntimeError("this version cannot load")

        def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
            return model_input

    return CannotLoad()


def test_a_version_that_cannot_start_leaves_the_old_one_serving(platform: Platform, served) -> None:  # type: ignore[no-untyped-def]
    name = MODELS["latency_ms"]
    payload, frame = _request(rows=5, seed=6)
    old = np.asarray(mlflow.pyfunc.load_model(f"models:/{name}/1").predict(frame), dtype=float)
    with mlflow.start_run(experiment_id=platform.client.get_experiment_by_name(PARTICIPANT).experiment_id):  # type: ignore[union-attr]
        broken = mlflow.pyfunc.log_model(
            name="broken", python_model=make_unloadable(), registered_model_name=name
        )
    hammer = Hammer(served["latency_ms"], payload)
    try:
        hammer.wait_for(old)  # an earlier test's rollout back to version 1 has ended
        start = len(hammer.answers)
        platform.client.set_registered_model_alias(name, "production", str(broken.registered_model_version))
        deadline = time.monotonic() + 180
        failed = f"version {broken.registered_model_version} did not start"
        while failed not in platform.procs.tail(f"serving-{name}", 400):
            assert time.monotonic() < deadline, "the launcher never reported the failed start"
            time.sleep(0.5)
        assert served_version(server_of(served["latency_ms"])) == "1"
        hammer.wait_for(old)
    finally:
        platform.client.set_registered_model_alias(name, "production", "1")
        hammer.stop()
    assert hammer.failures == []
    assert all(np.allclose(a, old, rtol=1e-9) for a in hammer.answers[start:])


def test_unreachable_tracking_server_fails_cleanly(platform: Platform) -> None:
    versions_before = len(platform.client.search_model_versions(f"name='{MODELS['latency_ms']}'"))
    started = time.monotonic()
    done = train(
        f"http://127.0.0.1:{free_port()}", "--n-rows", "500",
        TRAINER_CONNECT_ATTEMPTS="3", TRAINER_CONNECT_MAX_WAIT_S="1",
    )  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("trainer: error: tracking server") and "unreachable after 3 attempts" in last
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 60
    assert len(platform.client.search_model_versions(f"name='{MODELS['latency_ms']}'")) == versions_before


def test_schema_mismatch_csv_is_one_clear_line(platform: Platform, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    synthetic.generate(50).drop(columns=["region"]).to_csv(bad, index=False)
    done = train(platform.tracking_uri, "--data-csv", str(bad))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"trainer: error: {bad} does not match the feature schema: missing columns: region"
    )


def test_serving_waits_for_a_missing_alias_instead_of_crashing(platform: Platform, tmp_path: Path) -> None:
    procs = Processes(log_dir=tmp_path)
    proc = start_serving(procs, platform.tracking_uri, "not-trained-yet", free_port())
    try:
        deadline = time.monotonic() + 30
        while "waiting for models:/not-trained-yet@production" not in procs.tail("serving-not-trained-yet"):
            assert time.monotonic() < deadline, procs.tail("serving-not-trained-yet")
            assert proc.poll() is None, "the launcher exited instead of waiting"
            time.sleep(0.5)
        assert proc.poll() is None
    finally:
        procs.stop_all()
