"""Every Prometheus query of the model dashboards returns data from the real processes.

Real processes on loopback: PostgreSQL, `mlflow server`, the trainer, `mlflow models serve` for
both models, the gateway (`python -m services.gateway`), the monitor (`python -m services.monitor`)
and Prometheus scraping the gateway and the monitor every second. The traffic simulator
(`services.simulate`) sends drifted rows with feedback through the gateway; then each panel query of
grafana/dashboards/model-serving.json and model-quality-drift.json runs against Prometheus's HTTP
API and must return at least one series with a finite value.

Queries that cannot have data at process level are listed in NOT_HERE with the reason; nothing
else is left out.
"""

from __future__ import annotations

import importlib.util
import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from contracts.models import format_upstreams
from contracts.predlog_migrations import apply_schema
from services.local import Processes, start_mlflow, start_serving, wait_http
from services.simulate.traffic import Options, Simulator
from tests.conftest import ROOT, free_port, fresh_database, python_env, require
from tests.dashboards import DASHBOARDS, Query, dashboard_queries, has_data, promql, query

pytestmark = pytest.mark.integration

MODELS = {"latency-predictor": "latency_ms", "bandwidth-efficiency-predictor": "bandwidth_efficiency"}
CONTAINERS = "container_* series come from cAdvisor watching Docker containers: checked by the compose e2e"
CLOSED_LOOP = "orchestrator_* series need retrainings and rollbacks: checked by the compose e2e's closed loop"
# (dashboard uid, panel title, refId) -> why it has no data here, and a word its query must contain.
NOT_HERE: dict[tuple[str, str, str], tuple[str, str]] = {
    ("model-serving", "CPU by service", "A"): (CONTAINERS, "container_cpu_usage_seconds_total"),
    ("model-serving", "Memory by service", "A"): (CONTAINERS, "container_memory_working_set_bytes"),
    ("model-quality-drift", "Firing alerts", "A"): (
        "ALERTS needs alert rules that fire for their `for:` (minutes): checked by the compose e2e",
        "ALERTS",
    ),
    **{
        ("model-quality-drift", title, "A"): (CLOSED_LOOP, metric)
        for title, metric in (
            ("Retrainings by trigger and outcome", "orchestrator_retrainings_total"),
            ("Retraining and watching now", "orchestrator_busy"),
            ("Rollbacks", "orchestrator_rollbacks_total"),
            ("Since the last retraining decision", "orchestrator_last_success_timestamp_seconds"),
            ("Retraining time by stage (p90)", "orchestrator_stage_duration_seconds"),
        )
    },
}
QUERIES = dashboard_queries()
CHECKED = [q for q in QUERIES if q.key not in NOT_HERE]


def test_the_list_of_queries_not_checked_here_is_small_and_current() -> None:
    by_key = {q.key: q for q in QUERIES}
    assert len(NOT_HERE) <= 8
    for key, (_, metric) in NOT_HERE.items():
        assert key in by_key, f"{key} is no longer in the dashboards: remove it from NOT_HERE"
        assert metric in by_key[key].expr, (key, by_key[key].expr)
    assert len(CHECKED) >= 25, "the dashboards lost their queries?"


# --- the platform as processes ------------------------------------------------------------------


def start_prometheus(procs: Processes, data_dir: Path, targets: dict[str, int]) -> str:
    port = free_port()
    config = data_dir / "prometheus.yml"
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs: [{{targets: ['127.0.0.1:{p}']}}]\n"
        for job, p in targets.items()
    )
    config.write_text(f"global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n{jobs}")
    proc = procs.start(
        "prometheus",
        [str(shutil.which("prometheus")), f"--config.file={config}",
         f"--storage.tsdb.path={data_dir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/-/ready", proc, 60, "prometheus")
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def prometheus(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus scraping a gateway and a monitor after drifted traffic with feedback went through."""
    require("Prometheus (Debian package prometheus)", shutil.which("prometheus"))
    for module in ("services.gateway", "services.monitor"):
        require(f"{module} (python -m {module})", importlib.util.find_spec(module))
    data_dir = tmp_path_factory.mktemp("dashboards")
    procs = Processes(log_dir=data_dir / "logs")
    tracking_db = fresh_database(postgres_uri, "dashboards_mlflow")
    monitoring_db = fresh_database(postgres_uri, "dashboards_monitoring")
    apply_schema(monitoring_db)  # as the create-databases job does: the gateway runs no DDL
    try:
        tracking = start_mlflow(procs, tracking_db, data_dir, free_port())
        trained = subprocess.run(
            [sys.executable, "-m", "trainer", "--participant", "dashboards",
             "--n-rows", "3000", "--models", "rf"],
            env={**python_env(), "MLFLOW_TRACKING_URI": tracking}, cwd=ROOT,
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert trained.returncode == 0, trained.stderr[-3000:]
        upstreams = {}
        for name in MODELS:
            port = free_port()
            wait_http(f"http://127.0.0.1:{port}/ping", start_serving(procs, tracking, name, port), 180, name)
            upstreams[name] = f"http://127.0.0.1:{port}"

        gateway_port, monitor_port = free_port(), free_port()
        gateway = procs.start(
            "gateway",
            [sys.executable, "-m", "services.gateway"],
            {
                "GATEWAY_MODELS": format_upstreams(upstreams),
                "MLFLOW_TRACKING_URI": tracking,
                "MONITORING_DB_URI": monitoring_db,
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(gateway_port),
                "GATEWAY_REFRESH_S": "2",
            },
        )
        wait_http(f"http://127.0.0.1:{gateway_port}/health", gateway, 300, "the gateway")
        token_file = data_dir / "control_token"  # the monitor's /alerts needs one (contracts/guard.py)
        token_file.write_text(secrets.token_urlsafe(32))
        token_file.chmod(0o600)
        monitor = procs.start(
            "monitor",
            [sys.executable, "-m", "services.monitor"],
            {
                "CONTROL_TOKEN_FILE": str(token_file),
                "MLFLOW_TRACKING_URI": tracking,
                "MONITOR_MODELS": ",".join(MODELS),
                "MONITOR_HOST": "127.0.0.1",
                "MONITOR_PORT": str(monitor_port),
                "MONITOR_REFRESH_S": "2",
                # Drift and live quality from the prediction log, every second here.
                "MONITORING_DB_URI": monitoring_db,
                "MONITOR_INTERVAL_S": "1",
                "DRIFT_MIN_ROWS": "50",
            },
        )
        wait_http(f"http://127.0.0.1:{monitor_port}/metrics", monitor, 120, "the monitor")
        url = start_prometheus(procs, data_dir, {"gateway": gateway_port, "monitor": monitor_port})

        # Strongly drifted rows, feedback for every one of them shortly after.
        options = Options(
            gateway=f"http://127.0.0.1:{gateway_port}", rate=40.0, requests=240, drift=1.0, feedback_delay=0.5
        )
        stats = Simulator(options, out=lambda _line: None, models=MODELS).run()
        assert stats.errors == 0 and stats.sent == 240 and stats.feedback >= 240, stats.line(0, final=True)

        # Wait until Prometheus has scraped what every checked query needs (rates need two samples).
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            if all(has_data(query(url, promql(q.expr))) for q in CHECKED):
                break
            time.sleep(1)
        # Drift, live and estimated quality on the dashboards are the monitor's (from the prediction
        # log; the estimate from the loss estimator the trainer logged with each version).
        for series in ("gateway_dataset_drift", "gateway_live_rmse", "mlops_estimated_rmse"):
            assert has_data(query(url, f'{series}{{job="monitor"}}')), f"{series} not exported by the monitor"
        yield url
    except (RuntimeError, AssertionError) as exc:
        logs = "\n".join(f"--- {name}\n{procs.tail(name)}" for name, _ in procs.children)
        raise RuntimeError(f"{exc}\n{logs}") from exc
    finally:
        procs.stop_all()


@pytest.mark.parametrize("q", CHECKED, ids=[f"{q.dashboard}/{q.panel}/{q.ref}" for q in CHECKED])
def test_panel_query_returns_data(prometheus: str, q: Query) -> None:
    result = query(prometheus, promql(q.expr))
    assert result, f"{q.panel} ({q.ref}): no series for {promql(q.expr)}"
    assert has_data(result), f"{q.panel} ({q.ref}): only NaN/Inf for {promql(q.expr)}: {result[:3]}"


def test_model_variable_lists_both_models(prometheus: str) -> None:
    """The dashboards' `model` variable: label_values(gateway_model_info, model)."""
    for path in DASHBOARDS:
        [variable] = [v for v in json.loads(path.read_text())["templating"]["list"] if v["name"] == "model"]
        metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"]).groups()  # type: ignore[union-attr]
        response = requests.get(
            f"{prometheus}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=10
        )
        assert set(response.json()["data"]) == set(MODELS), path.name
