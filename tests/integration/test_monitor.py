"""The monitor as a process: a real MLflow server behind it, a real Alertmanager in front of it,
sending the control token from a credentials file as the stack's does, and a real Postgres
prediction log for its drift and live quality.

The registry is filled directly with MlflowClient (runs with test metrics and a reference profile,
versions, aliases): no trainer needed. The monitor refreshes every second here; its log holds one
JSON line per alert.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from contracts.drift import PROFILE_ARTIFACT
from contracts.predlog_migrations import apply_schema
from services.local import Processes, start_mlflow, wait_http
from tests.conftest import ROOT, free_port, fresh_database, require
from tests.monitor_support import Log, feature_rows, reference_profile

pytestmark = pytest.mark.integration

LATENCY, BANDWIDTH = "latency-predictor", "bandwidth-efficiency-predictor"
# Training-time metrics of the runs behind each registered version: (model, version) -> metrics.
RUNS = {
    (LATENCY, "1"): {"test_mae": 11.5, "test_rmse": 15.25, "test_r2": 0.81, "val_rmse": 14.0},
    (LATENCY, "2"): {"test_mae": 9.75, "test_rmse": 12.5, "test_r2": 0.875},
    (BANDWIDTH, "1"): {"test_mae": 0.0625, "test_rmse": 0.09, "test_r2": 0.93},
}
ALIASES = {(LATENCY, "production"): "1", (LATENCY, "staging"): "2", (BANDWIDTH, "production"): "1"}
AM_CONFIG = ROOT / "prometheus" / "alertmanager" / "alertmanager.yml"
TOKEN = "monitor-test-control-token"  # this test's own
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}

Series = tuple[str, str, str, str]  # model, alias, version, metric


@dataclass
class Registry:
    backend_uri: str
    tracking_uri: str
    client: MlflowClient


@dataclass
class Monitor:
    url: str
    log: Path
    token_file: Path

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        response = requests.get(f"{self.url}/metrics", timeout=5)
        assert response.status_code == 200
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    def exported(self) -> dict[Series, float]:
        """The mlops_model_test_metric series: (model, alias, version, metric) -> value."""
        found = {}
        for (name, labels), value in self.scrape().items():
            if name == "mlops_model_test_metric":
                lab = dict(labels)
                found[(lab["model"], lab["alias"], lab["version"], lab["metric"])] = value
        return found

    def value(self, name: str, **labels: str) -> float:
        return self.scrape().get((name, frozenset(labels.items())), 0.0)

    def log_lines(self) -> list[dict[str, Any]]:
        """The monitor's log lines (contracts.logs: one JSON object each)."""
        complete = self.log.read_text().split("\n")[:-1] if self.log.exists() else []  # not a half line
        return [json.loads(line) for line in complete if line.startswith("{")]

    def alert_lines(self) -> list[dict[str, Any]]:
        """The lines the monitor logged for received alerts."""
        return [line for line in self.log_lines() if line.get("event") == "alert"]


def expected_metrics(aliases: dict[tuple[str, str], str]) -> dict[Series, float]:
    return {
        (model, alias, version, metric): value
        for (model, alias), version in aliases.items()
        for metric, value in RUNS[(model, version)].items()
        if metric.startswith("test_")
    }


def wait_until(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def start_monitor(procs: Processes, tracking_uri: str, name: str = "monitor", **settings: str) -> Monitor:
    port = free_port()
    token_file = procs.log_dir.parent / f"{name}-control-token"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = {
        "CONTROL_TOKEN_FILE": str(token_file),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MONITOR_MODELS": f"{LATENCY}, {BANDWIDTH}",
        "MONITOR_HOST": "127.0.0.1",
        "MONITOR_PORT": str(port),
        "MONITOR_REFRESH_S": "1",
        **settings,
    }
    proc = procs.start(name, [sys.executable, "-m", "services.monitor"], env)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", proc, 60, "the monitor")
    return Monitor(url, procs.log_dir / f"{name}.log", token_file)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A tracking server on SQLite with three runs, their versions and aliases (see RUNS, ALIASES)."""
    data_dir = tmp_path_factory.mktemp("monitor-mlflow")
    procs = Processes(log_dir=data_dir / "logs")
    backend = f"sqlite:///{data_dir / 'mlflow.db'}"
    try:
        tracking = start_mlflow(procs, backend, data_dir, free_port())
        client = MlflowClient(tracking)
        experiment = client.create_experiment("monitor-test")
        for (model, version), metrics in RUNS.items():
            run = client.create_run(experiment)
            for key, value in metrics.items():
                client.log_metric(run.info.run_id, key, value)
            if (model, version) == (LATENCY, "1"):  # what the trainer logs with each version
                client.log_dict(run.info.run_id, reference_profile(1), PROFILE_ARTIFACT)
            client.set_terminated(run.info.run_id)
            if version == "1":
                client.create_registered_model(model)
            registered = client.create_model_version(
                model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
            )
            assert registered.version == version
        for (model, alias), version in ALIASES.items():
            client.set_registered_model_alias(model, alias, version)
        yield Registry(backend, tracking, client)
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def monitor(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitor]:
    procs = Processes(log_dir=tmp_path_factory.mktemp("monitor") / "logs")
    try:
        yield start_monitor(procs, registry.tracking_uri)
    finally:
        procs.stop_all()


def test_exports_the_test_metrics_of_the_version_behind_each_alias(monitor: Monitor) -> None:
    expected = expected_metrics(ALIASES)
    wait_until(lambda: monitor.exported() == expected, what="the runs' test metrics")
    # No staging alias on the bandwidth model, and val_* metrics are not exported.
    assert not any(model == BANDWIDTH and alias == "staging" for model, alias, _, _ in monitor.exported())
    assert monitor.value("mlops_monitor_last_refresh_timestamp_seconds") > time.time() - 30
    assert requests.get(f"{monitor.url}/health", timeout=5).json() == {"status": "ok"}


def test_moving_an_alias_replaces_its_series(registry: Registry, monitor: Monitor) -> None:
    moved = {**ALIASES, (LATENCY, "production"): "2"}
    try:
        registry.client.set_registered_model_alias(LATENCY, "production", "2")
        wait_until(lambda: monitor.exported() == expected_metrics(moved), what="the moved alias")
        assert (LATENCY, "production", "1", "test_rmse") not in monitor.exported()
    finally:
        registry.client.set_registered_model_alias(LATENCY, "production", "1")
    wait_until(lambda: monitor.exported() == expected_metrics(ALIASES), what="the alias moved back")


def test_drift_and_live_quality_from_the_prediction_log(
    registry: Registry, postgres_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two replicas' rows in a real log: the monitor scores the served version's window against its
    profile from the registry and exports drift and live quality under the dashboards' names."""
    log_uri = fresh_database(postgres_uri, "monitor_process_log")
    apply_schema(log_uri)
    writer = Log(log_uri, time.time() - 60, model=LATENCY)
    ids = [
        writer.predict("1", [row], [100.0], replica="ab"[i % 2])[0]
        for i, row in enumerate(feature_rows(120, seed=21, shift=1.0))
    ]
    writer.feedback([(rid, 110.0) for rid in ids])  # every prediction 10 off
    procs = Processes(log_dir=tmp_path_factory.mktemp("monitor-log") / "logs")
    try:
        monitor = start_monitor(
            procs, registry.tracking_uri, name="monitor-log", MONITORING_DB_URI=log_uri,
            MONITOR_INTERVAL_S="1", DRIFT_WINDOW="100", DRIFT_MIN_ROWS="50",
        )  # fmt: skip
        wait_until(
            lambda: monitor.value("gateway_dataset_drift", model=LATENCY) == 1.0,
            what="dataset drift of the latency model on /metrics",
        )
        assert monitor.value("gateway_drift_window_size", model=LATENCY) == 100
        assert monitor.value("gateway_feature_drift_psi", model=LATENCY, feature="hop_count") > 0
        assert monitor.value("gateway_live_mae", model=LATENCY) == pytest.approx(10.0)
        assert monitor.value("gateway_live_rmse", model=LATENCY) == pytest.approx(10.0)
        assert monitor.value("mlops_monitor_last_window_timestamp_seconds") > time.time() - 30
        # The bandwidth model has no logged prediction: none of its drift or quality series.
        assert not any(
            dict(labels).get("model") == BANDWIDTH and name.startswith("gateway_")
            and name != "gateway_drift_window_size"
            for name, labels in monitor.scrape()
        )  # fmt: skip
        assert "Traceback" not in monitor.log.read_text()
    finally:
        procs.stop_all()


def alertmanager_payload(marker: str) -> dict[str, Any]:
    """What Alertmanager 0.25+ POSTs to a webhook receiver: one firing and one resolved alert."""
    started = "2026-05-04T10:15:30.123456789Z"
    return {
        "receiver": "monitor",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "live_rmse_degraded", "model": LATENCY, "severity": "warning",
                           "marker": marker},
                "annotations": {"summary": f"{LATENCY}: live RMSE degraded", "description": "..."},
                "startsAt": started,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=gateway_live_rmse",
                "fingerprint": "3b15fd2b3a9b3c4e",
            },
            {
                "status": "resolved",
                "labels": {"alertname": "feature_drift_detected", "model": BANDWIDTH, "severity": "warning",
                           "marker": marker},
                "annotations": {"summary": f"{BANDWIDTH}: input features drifted"},
                "startsAt": started,
                "endsAt": "2026-05-04T10:25:30.5Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=gateway_dataset_drift",
                "fingerprint": "8c1a4e6f0d2b7a95",
            },
        ],
        "groupLabels": {"alertname": "live_rmse_degraded"},
        "commonLabels": {"severity": "warning"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}:{alertname="live_rmse_degraded"}',
        "truncatedAlerts": 0,
    }  # fmt: skip


def test_webhook_logs_and_counts_each_alert(monitor: Monitor) -> None:
    counters = [("live_rmse_degraded", "firing"), ("feature_drift_detected", "resolved")]
    before = {c: monitor.value("mlops_alerts_received_total", alertname=c[0], status=c[1]) for c in counters}
    marker = uuid.uuid4().hex
    request_id = f"alertmanager-{marker}"
    response = requests.post(
        f"{monitor.url}/alerts",
        json=alertmanager_payload(marker),
        headers={**AUTHORIZED, "X-Request-ID": request_id},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == request_id
    assert response.json() == {"received": 2}
    for alertname, status in counters:
        after = monitor.value("mlops_alerts_received_total", alertname=alertname, status=status)
        assert after == before[(alertname, status)] + 1, (alertname, status)
    wait_until(lambda: len([a for a in monitor.alert_lines() if a["labels"].get("marker") == marker]) == 2)
    logged = {a["alertname"]: a for a in monitor.alert_lines() if a["labels"].get("marker") == marker}
    assert logged["live_rmse_degraded"]["model"] == LATENCY
    assert logged["live_rmse_degraded"]["severity"] == "warning"
    assert logged["feature_drift_detected"]["status"] == "resolved"
    assert logged["feature_drift_detected"]["ends_at"].startswith("2026-05-04T10:25:30.5")
    # The one log format (contracts.logs): the common fields, and the id of the request logged in.
    for line in logged.values():
        assert line["service"] == "monitor" and line["level"] == "info"
        assert line["request_id"] == request_id
        assert line["message"] == f"alert {line['alertname']} {line['status']}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    started = [line for line in monitor.log_lines() if line["logger"] == "uvicorn.error"]
    assert started and all(line["service"] == "monitor" for line in started)
    plain = [line for line in monitor.log.read_text().splitlines() if line and not line.startswith("{")]
    assert not plain, f"log lines that are not JSON: {plain[:3]}"


def _drop(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


def _alert_without_alertname(payload: dict[str, Any]) -> dict[str, Any]:
    payload["alerts"][0]["labels"].pop("alertname")
    return payload


MALFORMED: dict[str, Callable[[dict[str, Any]], Any]] = {
    "not JSON": lambda _: "status=firing",
    "not an object": lambda _: [1, 2],
    "no alerts": lambda p: _drop(p, "alerts"),
    "empty alerts": lambda p: {**p, "alerts": []},
    "no status": lambda p: _drop(p, "status"),
    "unknown status": lambda p: {**p, "status": "exploded"},
    "other payload version": lambda p: {**p, "version": "3"},
    "alert without alertname": _alert_without_alertname,
    "labels not strings": lambda p: {**p, "alerts": [{**p["alerts"][0], "labels": {"alertname": ["x"]}}]},
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_payloads_are_refused_in_the_error_shape_and_count_nothing(
    monitor: Monitor, case: str
) -> None:
    def received() -> float:
        return sum(v for (name, _), v in monitor.scrape().items() if name == "mlops_alerts_received_total")

    before = received()
    body = MALFORMED[case](alertmanager_payload("malformed"))
    if isinstance(body, str):
        headers = {**AUTHORIZED, "Content-Type": "application/json"}
        response = requests.post(f"{monitor.url}/alerts", data=body, headers=headers, timeout=5)
    else:
        response = requests.post(f"{monitor.url}/alerts", json=body, headers=AUTHORIZED, timeout=5)
    expected = (400, "MALFORMED_REQUEST") if case == "not JSON" else (422, "INVALID_INPUT")
    assert (response.status_code, response.json()["error_code"]) == expected, response.text
    assert set(response.json()) == {"error_code", "message", "details"}  # contracts/errors.py
    assert received() == before


def test_keeps_the_last_values_while_the_tracking_server_is_down(
    registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A second server on the same store, stopped under a monitor of its own."""
    data_dir = tmp_path_factory.mktemp("monitor-down")
    server, monitors = Processes(log_dir=data_dir / "logs"), Processes(log_dir=data_dir / "logs")
    try:
        tracking = start_mlflow(server, registry.backend_uri, data_dir, free_port())
        monitor = start_monitor(monitors, tracking, name="monitor-down")
        expected = expected_metrics(ALIASES)
        wait_until(lambda: monitor.exported() == expected, what="the first refresh")
        assert monitor.value("mlops_monitor_refresh_errors_total") == 0

        server.stop_all()
        wait_until(
            lambda: monitor.value("mlops_monitor_refresh_errors_total") >= 2,
            what="refresh errors to be counted",
        )
        last_refresh = monitor.value("mlops_monitor_last_refresh_timestamp_seconds")
        assert monitor.exported() == expected, "the last values must stay exported"
        time.sleep(1.5)
        assert monitor.value("mlops_monitor_last_refresh_timestamp_seconds") == last_refresh
        assert requests.get(f"{monitor.url}/health", timeout=5).status_code == 200
        warned = [line for line in monitor.log_lines() if line["level"] == "warning"]
        refresh = "registry refresh failed, keeping the last values"
        assert any(line["message"].startswith(refresh) for line in warned)
        assert "Traceback" not in monitor.log.read_text()
    finally:
        monitors.stop_all()
        server.stop_all()


# --- The whole alert path: Alertmanager (the Debian binary) -> webhook -> monitor. ---------------


@dataclass
class Alertmanager:
    url: str
    credentials: Path  # the control token it sends (the stack's control_token_alertmanager)
    log: Path

    def post(self, *alerts: dict[str, Any]) -> None:
        response = requests.post(f"{self.url}/api/v2/alerts", json=list(alerts), timeout=5)
        assert response.status_code == 200, response.text

    def alerts(self) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/api/v2/alerts", timeout=5)
        assert response.status_code == 200, response.text
        return list(response.json())


@pytest.fixture(scope="module")
def alertmanager(monitor: Monitor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    """Our alertmanager.yml with the test monitor's URL, a credentials file holding the monitor's
    token, and short group timers, on loopback."""
    binary = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
    require("Alertmanager (Debian package prometheus-alertmanager)", binary)
    assert binary is not None
    base = tmp_path_factory.mktemp("alertmanager")
    token = base / "control_token_alertmanager"
    token.write_text(TOKEN)
    token.chmod(0o600)
    config = yaml.safe_load(AM_CONFIG.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    [webhook] = receivers["monitor"]["webhook_configs"]
    assert webhook["url"] == "http://monitor:8001/alerts"
    webhook["url"] = f"{monitor.url}/alerts"
    # The orchestrator is not part of this test: its notifications go to a closed loopback port.
    [retrain] = receivers["orchestrator"]["webhook_configs"]
    retrain["url"] = f"http://127.0.0.1:{free_port()}/alerts"
    for sender in (webhook, retrain):  # the compose secret's path, here the test's token file
        credentials = sender["http_config"]["authorization"]
        assert credentials == {"credentials_file": "/run/secrets/control_token_alertmanager"}
        credentials["credentials_file"] = str(token)
    config["route"].update(group_wait="1s", group_interval="1s")
    (base / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    procs = Processes(log_dir=base / "logs")
    proc = procs.start(
        "alertmanager",
        [binary, f"--config.file={base / 'alertmanager.yml'}", f"--storage.path={base / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", proc, 60, "alertmanager")
        yield Alertmanager(f"http://127.0.0.1:{port}", token, procs.log_dir / "alertmanager.log")
    finally:
        procs.stop_all()


def _alert(alertname: str, model: str, severity: str, marker: str, **times: datetime) -> dict[str, Any]:
    """An alert as Prometheus posts it. Starting now, as Prometheus's alerts do: Alertmanager sends
    older alerts of a new group at once, skipping group_wait (and the inhibitions it gives time for).
    """
    return {
        "labels": {"alertname": alertname, "model": model, "severity": severity, "marker": marker},
        "annotations": {"summary": f"{model}: {alertname}"},
        "startsAt": times.get("starts", datetime.now(UTC)).isoformat(),
        **({"endsAt": times["ends"].isoformat()} if "ends" in times else {}),
    }


def test_alertmanager_delivers_firing_and_resolved_alerts(
    alertmanager: Alertmanager, monitor: Monitor
) -> None:
    marker = uuid.uuid4().hex

    def delivered(status: str) -> bool:
        return any(
            a["labels"].get("marker") == marker and a["status"] == status for a in monitor.alert_lines()
        )

    started = datetime.now(UTC)
    alertmanager.post(_alert("live_rmse_degraded", LATENCY, "warning", marker, starts=started))
    wait_until(lambda: delivered("firing"), what="the firing alert at the monitor")
    # send_resolved: ending the alert sends it again, resolved.
    ended = datetime.now(UTC)
    alertmanager.post(_alert("live_rmse_degraded", LATENCY, "warning", marker, starts=started, ends=ended))
    wait_until(lambda: delivered("resolved"), what="the resolved alert at the monitor")
    assert (
        monitor.value("mlops_alerts_received_total", alertname="live_rmse_degraded", status="resolved") >= 1
    )


def test_critical_alert_inhibits_the_warnings_of_its_model_only(
    alertmanager: Alertmanager, monitor: Monitor
) -> None:
    marker = uuid.uuid4().hex
    alertmanager.post(
        _alert("gateway_high_error_rate", BANDWIDTH, "critical", marker),
        _alert("prediction_drift_high", BANDWIDTH, "warning", marker),
        _alert("prediction_drift_high", LATENCY, "warning", marker),
    )

    def arrived() -> set[tuple[str, str]]:
        return {
            (a["alertname"], a["model"]) for a in monitor.alert_lines() if a["labels"].get("marker") == marker
        }

    wait_until(
        lambda: {("gateway_high_error_rate", BANDWIDTH), ("prediction_drift_high", LATENCY)} <= arrived(),
        what="the critical alert and the other model's warning at the monitor",
    )
    state = {
        (a["labels"]["alertname"], a["labels"]["model"]): a["status"]
        for a in alertmanager.alerts()
        if a["labels"].get("marker") == marker
    }
    assert state[("prediction_drift_high", BANDWIDTH)]["state"] == "suppressed"
    assert state[("prediction_drift_high", BANDWIDTH)]["inhibitedBy"]
    assert state[("prediction_drift_high", LATENCY)]["state"] == "active"
    time.sleep(2)  # two group intervals: the suppressed warning is never sent
    assert ("prediction_drift_high", BANDWIDTH) not in arrived()


def test_alertmanager_with_a_wrong_token_is_refused(alertmanager: Alertmanager, monitor: Monitor) -> None:
    """The same path with a wrong token in Alertmanager's credentials file: the monitor refuses it
    (401, Alertmanager logs the failed notification) until the right token is back; Alertmanager
    reads the file at each notification, so no restart is needed."""

    def refused() -> int:
        lines = alertmanager.log.read_text().splitlines()
        return sum(1 for line in lines if "monitor/webhook" in line and "status code 401" in line)

    before = refused()
    marker = uuid.uuid4().hex
    try:
        alertmanager.credentials.write_text("a-wrong-token")
        alertmanager.post(_alert("monitor_only_test_alert", LATENCY, "warning", marker))
        wait_until(lambda: refused() > before, what="the monitor's 401 in Alertmanager's log")
        assert not any(a["labels"].get("marker") == marker for a in monitor.alert_lines())
    finally:
        alertmanager.credentials.write_text(TOKEN)
    wait_until(
        lambda: any(a["labels"].get("marker") == marker for a in monitor.alert_lines()),
        timeout=60,
        what="the alert delivered once the token is right again",
    )
