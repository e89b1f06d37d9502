"""Reports and the leaderboard against a real MLflow server on Postgres, after real training sessions
of two participants, and a real Prometheus scraping the gateway's own metrics.

The numbers in the HTML are read back from the cells' `data-value` (exact) and compared with the
runs; the plots must be inline SVG and the page must load nothing from anywhere.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from contracts import reports as names
from services.gateway.metrics import GatewayMetrics
from services.local import Processes, start_mlflow, wait_http
from services.monitor.metrics import MonitorMetrics
from services.reports import Settings
from services.reports.build import build
from services.reports.templates import CSP
from tests.conftest import ROOT, free_port, fresh_database, python_env, require
from tests.integration.test_dashboards import start_prometheus

pytestmark = pytest.mark.integration

LATENCY, BANDWIDTH = "latency-predictor", "bandwidth-efficiency-predictor"
# XML namespaces of inline SVG: names, never fetched.
NAMESPACES = {
    "http://www.w3.org/2000/svg",
    "http://www.w3.org/1999/xlink",
    "http://creativecommons.org/ns#",
    "http://purl.org/dc/elements/1.1/",
    "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
}


@dataclass
class Platform:
    tracking: str
    client: MlflowClient
    sessions: dict[str, Run]  # participant -> their session run


def train(tracking: str, participant: str, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "--participant", participant, "--n-rows", "2000", *args],
        env={**python_env(), "MLFLOW_TRACKING_URI": tracking}, cwd=ROOT,
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def platform(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """MLflow on Postgres; alice trains two candidates for both targets, bob one for latency."""
    base = tmp_path_factory.mktemp("reports")
    procs = Processes(log_dir=base / "logs")
    try:
        tracking = start_mlflow(procs, fresh_database(postgres_uri, "reports_mlflow"), base, free_port())
        train(tracking, "alice", "--models", "lr,rf")
        train(tracking, "bob", "--models", "lr", "--targets", "latency_ms", "--seed", "7")
        client = MlflowClient(tracking)
        sessions = {}
        for participant in ("alice", "bob"):
            experiment = client.get_experiment_by_name(participant)
            [session] = client.search_runs([experiment.experiment_id], "params.targets != ''")
            sessions[participant] = session
        yield Platform(tracking, client, sessions)
    finally:
        procs.stop_all()


def candidates(platform: Platform, participant: str) -> list[Run]:
    experiment = platform.client.get_experiment_by_name(participant)
    runs = platform.client.search_runs([experiment.experiment_id], "params.model != ''")
    return [r for r in runs if names.GATE_ROLE_TAG not in r.data.tags]


def rows(html: str, table_id: str) -> dict[str, str]:
    """data-run-id (or data-version, data-participant, data-model) -> the row's HTML, of one table."""
    match = re.search(rf'<table id="{re.escape(table_id)}"[^>]*>(.*?)</table>', html, re.S)
    assert match, f"no table {table_id}"
    found = {}
    for row in re.finditer(r"<tr (data-[a-z-]+)=\"([^\"]*)\"[^>]*>(.*?)</tr>", match.group(1), re.S):
        found[row.group(2)] = row.group(3)
    return found


def values(row_html: str) -> dict[str, float | None]:
    return {
        m: (float(v) if v else None)
        for m, v in re.findall(r'data-metric="([^"]+)" data-value="([^"]*)"', row_html)
    }


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def run_cli(
    platform: Platform, *args: str, prometheus: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **python_env(),
        "MLFLOW_TRACKING_URI": platform.tracking,
        "PROMETHEUS_URL": prometheus or closed_port_url(),
        "REPORTS_PUBLIC_URL": "http://localhost:8003",
    }
    return subprocess.run(
        [sys.executable, "-m", "services.reports", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def assert_self_contained(html: str) -> None:
    for tag in ("<script", "<link", "<img", "<iframe", "@import"):
        assert tag not in html, f"the report loads something: {tag}"
    assert not re.search(r"url\((?!#)", html), "a url() that is not a reference inside the page"
    # A URL in an attribute is an XML namespace declaration or nothing (text may name a URL).
    in_attributes = re.findall(r'([\w:-]+)=["\'](https?:[^"\']*)', html)
    assert all(name.startswith("xmlns") and url in NAMESPACES for name, url in in_attributes), in_attributes
    assert not re.search(r'(href|src)=["\']?//', html), "a protocol-relative link"
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "element ids repeat (inline plots must not share ids)"


def test_the_report_shows_the_runs_numbers_inline_plots_and_is_logged_on_the_session(
    platform: Platform, tmp_path: Path
) -> None:
    built = run_cli(platform, "build", "--experiment", "alice", "--out", str(tmp_path), "--window", "15m")
    assert built.returncode == 0, built.stderr[-2000:]
    html = (tmp_path / "alice.html").read_text()
    assert_self_contained(html)
    runs = candidates(platform, "alice")
    assert len(runs) == 4  # two candidates for two targets
    for run in runs:
        target = run.data.params["target"]
        row = rows(html, f"candidates-{target}")[run.info.run_id]
        shown = values(row)
        for split in ("val", "test"):
            for metric in ("mae", "rmse", "r2"):
                key = f"{split}_{metric}"
                assert shown[key] == run.data.metrics[key], (run.info.run_name, key)
        cost = values(rows(html, f"resources-{target}")[run.info.run_id])
        assert cost["cpu_seconds"] == run.data.metrics[names.CPU_SECONDS]
        assert cost["peak_rss_megabytes"] == run.data.metrics[names.PEAK_RSS_MB]
        assert cost["fit_seconds"] == run.data.metrics[names.FIT_SECONDS]
        assert cost["test_rmse"] == run.data.metrics["test_rmse"]
    # The best candidate per target is the one the trainer registered (session tag <target>.best_model).
    session = platform.sessions["alice"]
    for target in ("latency_ms", "bandwidth_efficiency"):
        best = re.search(
            r'<tr data-run-id="(\w+)" data-model="([\w-]+)"[^>]*class="best"',
            html.split(f'id="candidates-{target}"')[1],
        )
        assert best and best.group(2) == session.data.tags[f"{target}.best_model"]
        assert f"Best for {target} (lowest validation RMSE): {best.group(2)}" in html
    # Every plot is inline SVG.
    plots = [f"{kind}-{t}" for kind in ("quality", "cost") for t in ("latency_ms", "bandwidth_efficiency")]
    for plot in [*plots, f"registry-{LATENCY}", f"registry-{BANDWIDTH}"]:
        figure = re.search(rf'<figure class="plot" id="plot-{re.escape(plot)}">\s*<svg', html)
        assert figure, f"plot {plot} missing or not inline SVG"
    # The registry: every version with its decision, reason and the aliases it holds now (bob's
    # session registered latency v2 after alice's v1).
    for model in (LATENCY, BANDWIDTH):
        aliases = platform.client.get_registered_model(model).aliases
        versions = platform.client.search_model_versions(f"name='{model}'")
        assert {str(v.version) for v in versions} == set(rows(html, f"registry-{model}"))
        for version in versions:
            held = ",".join(sorted(a for a, v in aliases.items() if str(v) == str(version.version)))
            tr = rf'<tr data-version="{version.version}" data-decision="(\w*)" data-aliases="([^"]*)">'
            row = re.search(
                tr + r"(.*?)</tr>",
                html.split(f'id="registry-{model}"')[1],
                re.S,
            )
            assert row, (model, version.version)
            assert row.group(1) == version.tags["promotion.decision"] and row.group(2) == held
            assert escape(version.tags["promotion.reason"], quote=False) in row.group(3)  # as shown
    assert rows(html, f"registry-{LATENCY}")["1"].count("promoted") == 1
    # Prometheus was not reachable: the section says so, the report is complete otherwise.
    assert 'id="serving-unavailable"' in html and "could not be read" in html
    assert 'id="retrainings-empty"' in html
    # Logged on the session run, linked from its description.
    run_id = session.info.run_id
    logged = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=names.REPORT_ARTIFACT, tracking_uri=platform.tracking
        )
    )
    assert logged.read_text() == html
    tags = platform.client.get_run(run_id).data.tags
    url = f"http://localhost:8003/reports/alice/sessions/{run_id}"
    assert tags[names.REPORT_URL_TAG] == url
    # The link goes below the description the trainer wrote (its candidates and compare links).
    assert tags[names.NOTE_TAG].endswith(f"\n\n{names.REPORT_LINK_LABEL} [{url}]({url})")
    assert "[compare](" in tags[names.NOTE_TAG]
    # Building again replaces the link instead of adding another.
    assert run_cli(platform, "build", "--session", run_id, "--out", str(tmp_path)).returncode == 0
    assert platform.client.get_run(run_id).data.tags[names.NOTE_TAG].count(names.REPORT_LINK_LABEL) == 1
    session_html = (tmp_path / f"alice-session-{run_id[:8]}.html").read_text()
    assert f"Training session {session.info.run_name} in alice" in session_html


def test_bad_input_is_one_line_and_a_non_zero_exit(platform: Platform) -> None:
    for args, expected in (
        (
            ("build", "--experiment", "nobody"),
            "reports: error: no experiment named 'nobody' (experiments with training sessions: alice, bob)",
        ),
        (("build", "--session", "not-a-run"), "reports: error: 'not-a-run' is not a run id"),
    ):
        done = run_cli(platform, *args, "--no-log")
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.startswith("reports: error")]
        assert len(lines) == 1 and lines[0].startswith(expected), done.stderr
        assert "Traceback" not in done.stderr
    done = run_cli(platform, "build", "--window", "5 minutes")
    assert done.returncode == 2 and "expected a number and a unit" in done.stderr


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, GatewayMetrics, MonitorMetrics]]:
    """A real Prometheus scraping the gateway's metrics and the monitor's (their own classes) every
    second."""
    require("Prometheus (Debian package prometheus)", shutil.which("prometheus"))
    base = tmp_path_factory.mktemp("reports-prometheus")
    procs = Processes(log_dir=base / "logs")
    metrics, monitor = GatewayMetrics(), MonitorMetrics.create()
    port, monitor_port = free_port(), free_port()
    servers = [
        start_http_server(port, addr="127.0.0.1", registry=metrics.registry),
        start_http_server(monitor_port, addr="127.0.0.1", registry=monitor.registry),
    ]
    try:
        yield start_prometheus(procs, base, {"gateway": port, "monitor": monitor_port}), metrics, monitor
    finally:
        procs.stop_all()
        for server, thread in servers:
            server.shutdown()
            thread.join(5)


def test_the_serving_section_reads_prometheus(
    platform: Platform, prometheus: tuple[str, GatewayMetrics, MonitorMetrics], tmp_path: Path
) -> None:
    url, metrics, monitor = prometheus
    model = metrics.for_model(LATENCY)
    monitor.live_rmse.labels(LATENCY).set(5.5)  # drift and live quality: the monitor's
    monitor.live_mae.labels(LATENCY).set(4.25)
    monitor.dataset_drift.labels(LATENCY).set(1)
    monitor.feature_psi.labels(LATENCY, "distance_km").set(0.75)
    started = time.monotonic()
    sent = 0
    while time.monotonic() < started + 12:  # traffic while Prometheus scrapes: 10% answered 5xx
        for i in range(10):
            model.count("1", "predict", 500 if i == 0 else 200)
            model.duration_predict.observe(0.02)
        sent += 10
        time.sleep(0.25)
    rate = sent / (time.monotonic() - started)
    settings = Settings.from_env(dict(MLFLOW_TRACKING_URI=platform.tracking, PROMETHEUS_URL=url))
    [result] = build(
        platform.client, settings, experiment="bob", window="1m", out=tmp_path, log_artifact=False
    )
    html = result.report.html
    assert 'id="serving-unavailable"' not in html
    shown = values(rows(html, "serving-table")[LATENCY])
    # The traffic filled 12 s of the 1 min window: its mean rate is between a sixth and all of it.
    assert shown["requests_per_s"] and rate / 6 * 0.5 < shown["requests_per_s"] <= rate * 1.2
    assert shown["error_rate"] == pytest.approx(0.1, abs=0.02)
    assert shown["p50_ms"] and 10 < shown["p50_ms"] <= 25
    assert shown["live_rmse"] == 5.5 and shown["live_mae"] == 4.25
    trained = platform.client.get_run(platform.client.get_model_version(LATENCY, "1").run_id)
    assert shown["training_rmse"] == trained.data.metrics["test_rmse"]
    drift = rows(html, "drift-table")[LATENCY]
    assert "<td>yes</td>" in drift and "distance_km 0.75" in drift
    assert re.search(rf'<figure class="plot" id="plot-serving-{LATENCY}">\s*<svg', html)
    assert f"Live over 1m, {LATENCY}:" in html
    assert_self_contained(html)


@pytest.fixture(scope="module")
def service(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    procs = Processes(log_dir=tmp_path_factory.mktemp("reports-service") / "logs")
    port = free_port()
    env = {
        "MLFLOW_TRACKING_URI": platform.tracking,
        "PROMETHEUS_URL": closed_port_url(),
        "REPORTS_HOST": "127.0.0.1",
        "REPORTS_PORT": str(port),
        "REPORTS_CACHE_S": "1",
    }
    try:
        proc = procs.start("reports", [sys.executable, "-m", "services.reports", "serve"], env)
        wait_http(f"http://127.0.0.1:{port}/health", proc, 60, "the reports service")
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop_all()


def best_by_validation(platform: Platform, participant: str, target: str) -> Run:
    runs = [r for r in candidates(platform, participant) if r.data.params["target"] == target]
    return min(runs, key=lambda r: r.data.metrics["val_rmse"])


def test_the_leaderboard_shows_both_participants_best_versions(platform: Platform, service: str) -> None:
    board = requests.get(f"{service}/api/leaderboard", timeout=60).json()["targets"]
    latency = {e["participant"]: e for e in board["latency_ms"]}
    assert set(latency) == {"alice", "bob"}
    assert [e["participant"] for e in board["bandwidth_efficiency"]] == ["alice"]
    for participant, entry in latency.items():
        best = best_by_validation(platform, participant, "latency_ms")
        session = platform.sessions[participant]
        assert entry["run_id"] == best.info.run_id
        assert entry["version"] == session.data.tags["latency_ms.version"]
        assert entry["test_rmse"] == best.data.metrics["test_rmse"]
        assert entry["cpu_seconds"] == best.data.metrics[names.CPU_SECONDS]
        assert entry["runs"] == len(
            [r for r in candidates(platform, participant) if r.data.params["target"] == "latency_ms"]
        )
    rmses = [e["test_rmse"] for e in board["latency_ms"]]
    assert rmses == sorted(rmses)
    page = requests.get(f"{service}/leaderboard", timeout=60)
    assert page.status_code == 200
    table = rows(page.text, "leaderboard-latency_ms")
    assert set(table) == {"alice", "bob"}
    assert values(table["bob"])["test_rmse"] == latency["bob"]["test_rmse"]
    scraped = {
        (s.name, s.labels.get("participant"), s.labels.get("target"), s.labels.get("metric")): s.value
        for family in text_string_to_metric_families(requests.get(f"{service}/metrics", timeout=60).text)
        for s in family.samples
    }
    assert (
        scraped[("mlops_leaderboard_test_metric", "bob", "latency_ms", "test_rmse")]
        == latency["bob"]["test_rmse"]
    )
    assert scraped[("mlops_leaderboard_runs", "alice", "latency_ms", None)] == latency["alice"]["runs"]
    assert scraped[("mlops_leaderboard_up", None, None, None)] == 1


def test_the_pages_answer_and_unknown_ones_are_404(platform: Platform, service: str) -> None:
    assert requests.get(f"{service}/health", timeout=10).json() == {"status": "ok"}
    index = requests.get(f"{service}/", timeout=60)
    assert index.status_code == 200
    assert (
        'id="report-link-alice" href="/reports/alice"' in index.text and 'id="report-link-bob"' in index.text
    )
    alice = platform.sessions["alice"].info.run_id
    for path in ("/reports/alice", f"/reports/alice/sessions/{alice}"):
        page = requests.get(service + path, timeout=120)
        assert page.status_code == 200, page.text[:300]
        assert page.headers["content-security-policy"] == CSP, path  # and the rest (test_reports_hostile)
        assert 'id="summary"' in page.text and 'id="plot-quality-latency_ms"' in page.text
        assert_self_contained(page.text)
    for path, message in (
        ("/reports/nobody", "no experiment named &#39;nobody&#39;"),
        (f"/reports/bob/sessions/{alice}", f"session {alice} is not in experiment &#39;bob&#39;"),
        ("/reports/alice?window=forever", "expected a number and a unit"),
    ):
        page = requests.get(service + path, timeout=60)
        assert page.status_code in (400, 404), (path, page.status_code)
        assert re.search(r'<p id="error">[^<\n]*' + re.escape(message), page.text), page.text
    assert requests.get(f"{service}/openapi.json", timeout=10).json()["info"]["title"] == "mlops reports"
