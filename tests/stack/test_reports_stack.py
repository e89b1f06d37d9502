"""The reports service in the running stack: its pages read MLflow (its own read-only account) and
Prometheus, the leaderboard reaches Prometheus, and `make report` logs a report on a session run."""

from __future__ import annotations

import os
import re
import subprocess
import time

import requests
from markupsafe import escape
from mlflow.tracking import MlflowClient

from contracts import reports as names
from services.reports.templates import CSP_META, SECURITY_HEADERS
from tests.stack.stack import ENV, ENV_FILE, MLFLOW, REPORTS, ROOT, prometheus_query

PARTICIPANT = ENV["PARTICIPANT"]


def test_the_report_of_the_participant_reads_mlflow_and_prometheus() -> None:
    assert requests.get(f"{REPORTS}/health", timeout=10).json() == {"status": "ok"}
    index = requests.get(f"{REPORTS}/", timeout=120)
    assert index.status_code == 200 and f'id="report-link-{PARTICIPANT}"' in index.text
    page = requests.get(f"{REPORTS}/reports/{PARTICIPANT}", timeout=300)
    assert page.status_code == 200, page.text[:500]
    for element in ("summary", "candidates-latency_ms", "registry-latency-predictor", "serving-table"):
        assert f'id="{element}"' in page.text, element
    assert 'id="serving-unavailable"' not in page.text  # Prometheus answers inside the stack
    assert 'id="containers-table"' in page.text  # cAdvisor's figures
    board = requests.get(f"{REPORTS}/api/leaderboard", timeout=120).json()["targets"]
    assert PARTICIPANT in {e["participant"] for e in board["latency_ms"]}
    assert requests.get(f"{REPORTS}/reports/nobody-here", timeout=60).status_code == 404


def test_every_page_sends_the_security_headers() -> None:
    """What the browser is told: no script, no framing, no sniffing, no referrer (docs/reports.md)."""
    for path, status in (("/", 200), (f"/reports/{PARTICIPANT}", 200), ("/leaderboard", 200),
                         ("/reports/nobody-here", 404)):  # fmt: skip
        answer = requests.get(f"{REPORTS}{path}", timeout=300)
        assert answer.status_code == status, (path, answer.text[:300])
        for header, value in SECURITY_HEADERS.items():
            assert answer.headers.get(header) == value, (path, header, answer.headers.get(header))
        assert f'<meta http-equiv="Content-Security-Policy" content="{escape(CSP_META)}">' in answer.text, (
            path
        )


def test_prometheus_scrapes_the_leaderboard() -> None:
    deadline = time.monotonic() + 150  # the reports job is scraped every 60 s
    while not prometheus_query("mlops_leaderboard_up == 1"):
        assert time.monotonic() < deadline, "mlops_leaderboard_up is not 1"
        time.sleep(5)
    found = prometheus_query(
        f'mlops_leaderboard_test_metric{{participant="{PARTICIPANT}",metric="test_rmse"}}'
    )
    assert found


def test_make_report_logs_the_report_on_the_session_run() -> None:
    client = MlflowClient(MLFLOW)
    experiment = client.get_experiment_by_name(PARTICIPANT)
    assert experiment is not None
    [session] = client.search_runs(
        [experiment.experiment_id], "params.targets != ''", order_by=["start_time DESC"], max_results=1
    )
    done = subprocess.run(
        ["make", "--no-print-directory", "report", f"SESSION={session.info.run_id}"],
        cwd=ROOT, env={**os.environ, "MLOPS_ENV_FILE": str(ENV_FILE)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    tags = client.get_run(session.info.run_id).data.tags
    assert re.fullmatch(
        rf"http://localhost:\d+/reports/{PARTICIPANT}/sessions/{session.info.run_id}",
        tags[names.REPORT_URL_TAG],
    )
    assert tags[names.REPORT_URL_TAG] in tags[names.NOTE_TAG]
    artifacts = [a.path for a in client.list_artifacts(session.info.run_id, "reports")]
    assert artifacts == [names.REPORT_ARTIFACT]
    # The linked page answers.
    path = tags[names.REPORT_URL_TAG].split("/", 3)[3]
    assert requests.get(f"{REPORTS}/{path}", timeout=300).status_code == 200
