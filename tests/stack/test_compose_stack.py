"""The compose stack, running (started by `make e2e`): every promise of `make up`, checked over HTTP.

Run only by infra/e2e.sh, after `make up`; it reads the stack's settings from $MLOPS_ENV_FILE.
The last test restarts the stack (`make down`, `make up`) and checks that nothing was lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient

from tests import dashboards

ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = Path(os.environ.get("MLOPS_ENV_FILE", ROOT / ".env"))
MODELS = ("latency-predictor", "bandwidth-efficiency-predictor")
REQUEST = json.loads((ROOT / "docs/examples/predict-request.json").read_text())


def settings() -> dict[str, str]:
    if not os.environ.get("COMPOSE_PROJECT_NAME"):
        pytest.fail("run through `make e2e` (infra/e2e.sh): it starts the stack these tests check")
    lines = ENV_FILE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


ENV = settings()
MLFLOW = f"http://127.0.0.1:{ENV['MLFLOW_PORT']}"
SERVING = {
    "latency-predictor": f"http://127.0.0.1:{ENV['SERVING_LATENCY_PORT']}/invocations",
    "bandwidth-efficiency-predictor": f"http://127.0.0.1:{ENV['SERVING_BANDWIDTH_PORT']}/invocations",
}
PROMETHEUS = f"http://127.0.0.1:{ENV['PROMETHEUS_PORT']}"
GATEWAY = f"http://127.0.0.1:{ENV.get('GATEWAY_PORT', '8000')}"
GRAFANA = f"http://127.0.0.1:{ENV['GRAFANA_PORT']}"


@pytest.fixture(scope="module")
def client() -> MlflowClient:
    return MlflowClient(MLFLOW)


def session_children(client: MlflowClient) -> list:  # type: ignore[type-arg]
    experiment = client.get_experiment_by_name(ENV["PARTICIPANT"])
    assert experiment is not None, f"no experiment {ENV['PARTICIPANT']!r}"
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def snapshot(client: MlflowClient) -> dict[str, object]:
    """What must survive a restart: runs, versions with aliases, artifact listings."""
    runs = session_children(client)
    return {
        "runs": sorted(r.info.run_id for r in runs),
        "versions": {
            name: sorted((v.version, v.run_id) for v in client.search_model_versions(f"name='{name}'"))
            for name in MODELS
        },
        "aliases": {name: client.get_registered_model(name).aliases for name in MODELS},
        "artifacts": {
            r.info.run_id: sorted(a.path for a in client.list_artifacts(r.info.run_id, "plots")) for r in runs
        },
    }


def test_both_models_have_staging_and_production(client: MlflowClient) -> None:
    for name in MODELS:
        aliases = client.get_registered_model(name).aliases
        assert {"staging", "production"} <= set(aliases), (name, aliases)


def test_runs_carry_metrics_params_and_system_metrics(client: MlflowClient) -> None:
    runs = session_children(client)
    assert len(runs) >= 6  # three candidates for two targets
    for run in runs:
        for key in ("test_mae", "test_rmse", "test_r2", "val_rmse", "resource/cpu_seconds"):
            assert key in run.data.metrics, (run.info.run_name, key)
        assert {"model", "target", "n_rows", "seed"} <= set(run.data.params)
        assert run.data.tags.get("platform_version") == ENV["PLATFORM_VERSION"]
    assert any("system/cpu_utilization_percentage" in r.data.metrics for r in runs)
    assert any("resource/cgroup_memory_megabytes" in r.data.metrics for r in runs)


def test_artifacts_come_back_through_the_server_from_s3(client: MlflowClient, tmp_path: Path) -> None:
    run = session_children(client)[0]
    png = Path(client.download_artifacts(run.info.run_id, "plots/residuals.png", str(tmp_path)))
    assert png.read_bytes()[:4] == b"\x89PNG"
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{ENV['S3_API_PORT']}",
        aws_access_key_id=ENV["S3_ACCESS_KEY"],
        aws_secret_access_key=ENV["S3_SECRET_KEY"],
        region_name="us-east-1",
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=ENV["S3_BUCKET"], MaxKeys=1000).get("Contents", [])]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/plots/residuals.png") for k in keys), keys[:20]
    assert any(k.endswith("MLmodel") for k in keys), "no model stored in the bucket"


@pytest.mark.parametrize("name", MODELS)
def test_served_models_answer_with_numbers(name: str) -> None:
    response = requests.post(SERVING[name], json=REQUEST, timeout=30)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(REQUEST["dataframe_records"])
    assert all(isinstance(p, float) for p in predictions)


def test_malformed_request_gets_4xx() -> None:
    headers = {"Content-Type": "application/json"}
    response = requests.post(SERVING["latency-predictor"], data="{not json", headers=headers, timeout=30)
    assert 400 <= response.status_code < 500


def test_prometheus_scrapes_every_target() -> None:
    deadline = time.monotonic() + 90
    while True:
        targets = requests.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if targets and all(h == "up" for h in health.values()):
            break
        assert time.monotonic() < deadline, health
        time.sleep(3)
    assert {"prometheus", "mlflow", "gateway", "monitor", "alertmanager", "cadvisor"} <= set(health)
    for query in (
        "mlflow_http_request_total",
        'mlops_model_test_metric{alias="production",metric="test_rmse"}',
        'container_memory_working_set_bytes{container_label_com_docker_compose_service="gateway"}',
        "gateway_model_info",
    ):
        deadline = time.monotonic() + 60
        while not prometheus_query(query):
            assert time.monotonic() < deadline, f"no series for {query}"
            time.sleep(3)
    managers = requests.get(f"{PROMETHEUS}/api/v1/alertmanagers", timeout=10).json()["data"]
    assert managers["activeAlertmanagers"], "Prometheus knows no Alertmanager"


def prometheus_query(query: str) -> list[dict[str, object]]:
    response = requests.get(f"{PROMETHEUS}/api/v1/query", params={"query": query}, timeout=10)
    return list(response.json()["data"]["result"])


@pytest.mark.parametrize("name", MODELS)
def test_gateway_predicts_with_the_production_version(client: MlflowClient, name: str) -> None:
    response = requests.post(
        f"{GATEWAY}/models/{name}/predict", json={"records": REQUEST["dataframe_records"]}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == client.get_model_version_by_alias(name, "production").version
    assert len(body["predictions"]) == len(body["request_ids"]) == len(REQUEST["dataframe_records"])
    direct = requests.post(SERVING[name], json=REQUEST, timeout=30).json()["predictions"]
    assert body["predictions"] == pytest.approx(direct)


def test_gateway_rejects_bad_records_with_422_naming_the_field() -> None:
    record = dict(REQUEST["dataframe_records"][0], hop_count="many")
    response = requests.post(
        f"{GATEWAY}/models/latency-predictor/predict", json={"records": [record]}, timeout=30
    )
    assert response.status_code == 422
    assert "hop_count" in response.text and "Traceback" not in response.text


def test_grafana_loaded_its_provisioning() -> None:
    auth = (ENV["GRAFANA_ADMIN_USER"], ENV["GRAFANA_ADMIN_PASSWORD"])
    assert requests.get(f"{GRAFANA}/api/health", timeout=10).json()["database"] == "ok"
    dashboard = requests.get(f"{GRAFANA}/api/dashboards/uid/platform-overview", auth=auth, timeout=10)
    assert dashboard.status_code == 200 and dashboard.json()["dashboard"]["title"] == "Platform overview"
    for uid in ("model-serving", "model-quality-drift"):
        assert (
            requests.get(f"{GRAFANA}/api/dashboards/uid/{uid}", auth=auth, timeout=10).status_code == 200
        ), uid
    for uid in ("prometheus", "mlflow-db"):
        assert requests.get(f"{GRAFANA}/api/datasources/uid/{uid}", auth=auth, timeout=10).status_code == 200
    assert requests.get(f"{GRAFANA}/api/dashboards/uid/platform-overview", timeout=10).status_code == 401


def test_simulated_drift_fires_the_drift_alert_and_reaches_the_receiver() -> None:
    """`make simulate DRIFT=1`: within minutes the drift alert fires (rule `for: 2m`), Alertmanager
    delivers it to the monitor, and every dashboard panel (container CPU and memory and firing
    alerts included) has data, the drift panels showing the drift."""
    simulator = subprocess.Popen(
        [sys.executable, "-m", "services.simulate", "--gateway", GATEWAY, "--drift", "1.0",
         "--rate", "20", "--duration", "420", "--feedback-delay", "2"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 360
        firing = 'ALERTS{alertname="feature_drift_detected",alertstate="firing"}'
        while not prometheus_query(firing):
            assert simulator.poll() is None, "the simulator stopped"
            assert time.monotonic() < deadline, "feature_drift_detected did not fire"
            time.sleep(5)
        assert prometheus_query("gateway_dataset_drift == 1")
        assert prometheus_query("max by (model) (gateway_feature_drift_psi) > 0.2")
        assert prometheus_query("gateway_live_rmse")
        received = 'mlops_alerts_received_total{alertname="feature_drift_detected",status="firing"} > 0'
        deadline = time.monotonic() + 120  # Alertmanager's group_wait, then a monitor scrape
        while not prometheus_query(received):
            assert time.monotonic() < deadline, "Alertmanager did not deliver the alert to the monitor"
            time.sleep(5)
        # Every panel of both model dashboards has data, as Grafana would query it, and the drift
        # panels show the drift.
        results = {
            q.key: dashboards.query(PROMETHEUS, dashboards.promql(q.expr))
            for q in dashboards.dashboard_queries()
        }
        empty = [key for key, result in results.items() if not dashboards.has_data(result)]
        assert not empty, f"dashboard panels without data: {empty}"
        drift = ("model-quality-drift", "Dataset drift", "A")
        assert any(float(series["value"][1]) == 1 for series in results[drift])
        firing = results[("model-quality-drift", "Firing alerts", "A")]
        assert "feature_drift_detected" in {series["metric"]["alertname"] for series in firing}
    finally:
        simulator.terminate()
        simulator.wait(timeout=30)


def test_a_new_production_version_rolls_out_without_a_failed_request(client: MlflowClient) -> None:
    """Another candidate becomes production: the serving container starts it beside the old one and
    the gateway switches to it; predictions through the gateway never fail, then the same back."""
    name = "latency-predictor"
    before = client.get_model_version_by_alias(name, "production")
    other = next(
        r
        for r in session_children(client)
        if r.data.params["target"] == "latency_ms" and r.info.run_id != before.run_id
    )
    mlflow.set_tracking_uri(MLFLOW)
    moved = mlflow.register_model(f"runs:/{other.info.run_id}/model", name)
    records = {"records": REQUEST["dataframe_records"]}

    def predict_until(version: str) -> None:
        deadline, labels = time.monotonic() + 240, [""]
        while labels[-1] != version:
            assert time.monotonic() < deadline, f"the gateway never answered with v{version}: {labels[-3:]}"
            answer = requests.post(f"{GATEWAY}/models/{name}/predict", json=records, timeout=60)
            assert answer.status_code == 200, answer.text
            labels.append(answer.json()["version"])
            time.sleep(0.2)

    client.set_registered_model_alias(name, "production", moved.version)
    try:
        predict_until(moved.version)
        assert client.get_registered_model(name).tags["served.production"] == moved.version
    finally:
        client.set_registered_model_alias(name, "production", before.version)
    predict_until(before.version)


def test_make_down_then_up_keeps_runs_models_and_artifacts(client: MlflowClient, tmp_path: Path) -> None:
    before = snapshot(client)
    subprocess.run(["make", "--no-print-directory", "down"], cwd=ROOT, check=True)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{MLFLOW}/health", timeout=5)
    subprocess.run(["make", "--no-print-directory", "up"], cwd=ROOT, check=True)
    fresh = MlflowClient(MLFLOW)
    assert snapshot(fresh) == before
    run_id = str(before["runs"][0])  # type: ignore[index]
    png = Path(fresh.download_artifacts(run_id, "plots/predicted_vs_actual.png", str(tmp_path)))
    assert png.read_bytes()[:4] == b"\x89PNG"
    response = requests.post(SERVING["latency-predictor"], json=REQUEST, timeout=30)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 120  # the gateway waits for serving, then loads the registry
    while requests.get(f"{GATEWAY}/health", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the gateway did not become healthy after the restart"
        time.sleep(2)
