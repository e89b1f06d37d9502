"""services.monitor: settings, the webhook payload, the exported series, the registry refresh."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from mlflow.tracking import MlflowClient
from pydantic import ValidationError
from starlette.testclient import TestClient

from contracts.alerts import AlertmanagerWebhook
from contracts.errors import ErrorBody, install_error_handlers
from contracts.guard import ControlToken
from contracts.logs import JsonFormatter
from contracts.settings import SettingsError
from services.monitor import Settings, routes
from services.monitor.alerts import handle_alert
from services.monitor.app import create_app
from services.monitor.metrics import MonitorMetrics
from services.monitor.registry import Refresher, read_test_metrics
from tests.conftest import ROOT, free_port, python_env

MODEL = "latency-predictor"


def test_settings_read_comma_separated_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("MONITOR_MODELS", " a-model, other ,")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.models == ["a-model", "other"]
    assert settings.aliases == ["production", "staging"]
    assert (settings.port, settings.refresh_s) == (8001, 30.0)
    # Drift and live quality: off without a prediction log; the compose file's defaults otherwise.
    assert settings.monitoring.db_uri == ""
    assert (settings.interval_s, settings.drift.window, settings.drift.min_rows) == (10.0, 500, 100)
    assert (settings.drift.max_age_s, settings.drift.max_rows_per_request) == (3600.0, 20)
    assert (settings.drift.psi_threshold, settings.dataset_drift.share) == (0.2, 0.3)
    assert (settings.feedback.window, settings.feedback.max_age_s) == (1000, 86400.0)


@pytest.mark.parametrize(
    "name, value",
    [
        ("MONITOR_MODELS", " , "),
        ("MONITOR_REFRESH_S", "0"),
        ("MONITOR_INTERVAL_S", "0"),
        ("DRIFT_WINDOW", "0"),
        ("DRIFT_MIN_ROWS", "501"),  # more than DRIFT_WINDOW: drift would never be computed
        ("DRIFT_MAX_AGE_S", "-1"),
        ("DRIFT_MAX_ROWS_PER_REQUEST", "0"),
        ("DRIFT_PSI_THRESHOLD", "0"),
        ("DATASET_DRIFT_SHARE", "1.5"),
        ("FEEDBACK_WINDOW", "ten"),
        ("FEEDBACK_MAX_AGE_S", "0"),
    ],
)
def test_settings_refuse_useless_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        Settings()  # type: ignore[call-arg]


def test_service_exits_with_one_line_when_a_setting_is_missing() -> None:
    env = {k: v for k, v in python_env().items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-m", "services.monitor"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "monitor: error: MLFLOW_TRACKING_URI: Field required"


def webhook(**changes: Any) -> dict[str, Any]:
    """A notification as Alertmanager sends it (webhook payload version 4)."""
    alert = {
        "status": "firing",
        "labels": {"alertname": "live_rmse_degraded", "model": MODEL, "severity": "warning"},
        "annotations": {"summary": "latency-predictor: live RMSE degraded"},
        "startsAt": "2026-05-04T10:15:30.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "3b15fd2b3a9b3c4e",
    }
    return {
        "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
        "receiver": "monitor", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "alerts": [alert], **changes,
    }  # fmt: skip


def test_webhook_payload_parses() -> None:
    payload = AlertmanagerWebhook.model_validate(webhook())
    [alert] = payload.alerts
    assert (alert.alertname, alert.status, alert.generator_url) == (
        "live_rmse_degraded",
        "firing",
        "http://prometheus:9090/graph",
    )
    assert alert.starts_at is not None and alert.starts_at.year == 2026
    assert payload.external_url == "http://alertmanager:9093"


@pytest.mark.parametrize(
    "changes",
    [
        {"alerts": []},
        {"status": "pending"},
        {"version": "3"},
        {"alerts": [{"status": "firing", "labels": {"severity": "warning"}}]},
        {"alerts": [{"status": "firing", "labels": {"alertname": ""}}]},
        {"alerts": [{"status": "unknown", "labels": {"alertname": "x"}}]},
    ],
    ids=["no alerts", "bad status", "other version", "no alertname", "empty alertname", "alert status"],
)
def test_webhook_payload_refuses_malformed_bodies(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AlertmanagerWebhook.model_validate(webhook(**changes))


def test_handle_alert_counts_and_logs_one_json_line(caplog: pytest.LogCaptureFixture) -> None:
    metrics = MonitorMetrics.create()
    [alert] = AlertmanagerWebhook.model_validate(webhook()).alerts
    with caplog.at_level(logging.INFO, logger="services.monitor.alerts"):
        handle_alert(alert, metrics)
        handle_alert(alert, metrics)
    counted = metrics.registry.get_sample_value(
        "mlops_alerts_received_total", {"alertname": "live_rmse_degraded", "status": "firing"}
    )
    assert counted == 2
    line = JsonFormatter("monitor").format(caplog.records[0])  # as contracts.logs writes it
    assert "\n" not in line
    record = json.loads(line)
    assert record["service"] == "monitor" and record["message"] == "alert live_rmse_degraded firing"
    assert (record["alertname"], record["status"], record["model"], record["severity"]) == (
        "live_rmse_degraded",
        "firing",
        MODEL,
        "warning",
    )


def test_series_of_versions_no_longer_behind_an_alias_disappear() -> None:
    metrics = MonitorMetrics.create()
    old, new = (MODEL, "production", "1", "test_rmse"), (MODEL, "production", "2", "test_rmse")
    metrics.set_test_metrics({old: 10.0})
    metrics.set_test_metrics({new: 8.0})

    def value(key: tuple[str, str, str, str]) -> float | None:
        labels = dict(zip(("model", "alias", "version", "metric"), key, strict=True))
        return metrics.registry.get_sample_value("mlops_model_test_metric", labels)

    assert (value(old), value(new)) == (None, 8.0)


# --- The HTTP API in-process: every error in the shape of contracts.errors. ----------------------


TOKEN = "unit-test-control-token"


@pytest.fixture
def api(tmp_path: Path) -> TestClient:
    """The monitor's app without its lifespan (no registry refresh), called with the control token."""
    token = tmp_path / "control_token"
    token.write_text(TOKEN + "\n")
    settings = Settings.from_env(
        dict(MLFLOW_TRACKING_URI="http://127.0.0.1:1", CONTROL_TOKEN_FILE=str(token))
    )
    return TestClient(
        create_app(settings),
        base_url="http://localhost:8001",
        headers={"Authorization": f"Bearer {TOKEN}"},
        raise_server_exceptions=False,
    )


def test_the_webhook_counts_alerts(api: TestClient) -> None:
    answer = api.post("/alerts", json=webhook())
    assert answer.status_code == 200 and answer.json() == {"received": 1}
    assert api.get("/health").json() == {"status": "ok"}
    assert "mlops_alerts_received_total" in api.get("/metrics").text


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
def test_the_webhook_needs_the_control_token(api: TestClient, authorization: str | None) -> None:
    del api.headers["Authorization"]
    headers = {"Authorization": authorization} if authorization else {}
    answer = api.post("/alerts", json=webhook(), headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"] == "Bearer"
    assert ErrorBody.model_validate(answer.json()).error_code == "UNAUTHENTICATED"
    # Before the body is validated: an invalid body without the token is 401 too.
    assert api.post("/alerts", json={"alerts": "nope"}, headers=headers).status_code == 401
    assert "mlops_alerts_received_total{" not in api.get("/metrics").text


def test_the_token_file_is_read_again_when_it_changes(api: TestClient, tmp_path: Path) -> None:
    (tmp_path / "control_token").write_text("a-rotated-control-token")
    assert api.post("/alerts", json=webhook()).status_code == 401
    rotated = {"Authorization": "Bearer a-rotated-control-token"}
    assert api.post("/alerts", json=webhook(), headers=rotated).status_code == 200


def test_a_malformed_webhook_is_422_naming_each_field(
    api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    bad = webhook(version="3", alerts=[{"status": "unknown", "labels": {"alertname": "x"}}])
    with caplog.at_level(logging.WARNING, logger="contracts.errors"):
        answer = api.post("/alerts", json=bad)
    assert answer.status_code == 422
    body = ErrorBody.model_validate(answer.json())
    assert body.error_code == "INVALID_INPUT" and "detail" not in answer.json()
    assert {(d.field, d.got) for d in body.details} == {
        ("version", 'string "3"'),
        ("alerts.0.status", 'string "unknown"'),
    }
    assert "rejected POST /alerts" in caplog.text


@pytest.mark.parametrize(
    "method, path, body, content_type, status, code",
    [
        ("POST", "/alerts", b"{", "application/json", 400, "MALFORMED_REQUEST"),
        ("POST", "/alerts", b"{}", "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("GET", "/alerts", b"", "", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/nowhere", b"", "", 404, "NOT_FOUND"),
    ],
)
def test_other_mistakes_answer_in_the_same_shape(
    api: TestClient, method: str, path: str, body: bytes, content_type: str, status: int, code: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = api.request(method, path, content=body, headers=headers)
    assert answer.status_code == status
    assert ErrorBody.model_validate(answer.json()).error_code == code


def test_the_router_alone_counts_alerts_into_the_metrics_it_is_given(tmp_path: Path) -> None:
    """routes.router on an app of its own: the webhook and /metrics use the metrics the dependency
    gives, the control token is the app's."""
    token = tmp_path / "control_token"
    token.write_text(TOKEN)
    metrics = MonitorMetrics.create()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(routes.router)
    app.state.control_token = ControlToken(token)
    app.dependency_overrides[routes.get_metrics] = lambda: metrics
    client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})
    assert client.post("/alerts", json=webhook()).json() == {"received": 1}
    labels = {"alertname": "live_rmse_degraded", "status": "firing"}
    assert metrics.registry.get_sample_value("mlops_alerts_received_total", labels) == 1
    assert (
        'mlops_alerts_received_total{alertname="live_rmse_degraded",status="firing"} 1.0'
        in client.get("/metrics").text
    )
    assert client.post("/alerts", json=webhook(), headers={"Authorization": "Bearer no"}).status_code == 401


# --- Against a real registry: an in-process SQLite store (no server needed to read it). -----------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowClient]:
    """latency-predictor v1 (production, full test metrics) and v2 (staging, no test metrics)."""
    base = tmp_path_factory.mktemp("registry")
    store = f"sqlite:///{base / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    experiment = client.create_experiment("monitor-unit", artifact_location=(base / "artifacts").as_uri())
    client.create_registered_model(MODEL)
    for version, metrics in (
        ("1", {"test_mae": 3.0, "test_rmse": 4.0, "test_r2": 0.9}),
        ("2", {"val_rmse": 1.0}),
    ):
        run = client.create_run(experiment)
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        client.set_registered_model_alias(MODEL, "production" if version == "1" else "staging", version)
    yield client


def test_reads_the_test_metrics_behind_each_alias(client: MlflowClient) -> None:
    values = read_test_metrics(client, [MODEL, "never-registered"], ["production", "staging", "canary"])
    # v2 (staging) has no test metrics, the canary alias and the other model do not exist.
    assert values == {
        (MODEL, "production", "1", "test_mae"): 3.0,
        (MODEL, "production", "1", "test_rmse"): 4.0,
        (MODEL, "production", "1", "test_r2"): 0.9,
    }


def test_failed_refresh_keeps_the_last_values(client: MlflowClient, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = MonitorMetrics.create()
    assert Refresher(client, [MODEL], ["production"], metrics, 30).refresh() is True
    refreshed_at = metrics.registry.get_sample_value("mlops_monitor_last_refresh_timestamp_seconds")
    assert refreshed_at and refreshed_at > 0

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = MlflowClient(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert Refresher(down, [MODEL], ["production"], metrics, 30).refresh() is False
    assert metrics.registry.get_sample_value("mlops_monitor_refresh_errors_total") == 1
    assert metrics.registry.get_sample_value("mlops_monitor_last_refresh_timestamp_seconds") == refreshed_at
    labels = {"model": MODEL, "alias": "production", "version": "1", "metric": "test_rmse"}
    assert metrics.registry.get_sample_value("mlops_model_test_metric", labels) == 4.0
