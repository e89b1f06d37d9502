"""The monitor, the orchestrator and the reports hold to their OpenAPI descriptions, and to their guards
(contracts/guard.py: the control token, the Host check, the body limit): schemathesis with every
check (tests/fuzzing.py, as for the gateway in test_gateway_openapi.py), against each service run as
a real process on loopback over a real MLflow registry (SQLite store, every model in production).
The orchestrator runs its process runner with no prediction log, so a retraining the fuzzer starts
is recorded as skipped in MLflow instead of training. These are all our HTTP services besides the
gateway; the serving launcher and the MLflow server are MLflow's own, and the Grafana, MinIO and
cAdvisor programs under infra/offline are stand-ins.

What the first runs found, fixed in the services (0 server errors were found; the answers were wrong):
- both: `/metrics` answered text/plain where the description said JSON;
- both: an alert without an `alertname` label was refused (422) though the description allowed it
  (contracts/alerts.py now says `alertname` is required), and `truncatedAlerts: false` or a
  number for `startsAt`/`endsAt` were accepted (now 422: Alertmanager sends a count and RFC 3339);
- both: every 4xx was described with FastAPI's default `HTTPValidationError`, not the error shape
  the services answer with (contracts.errors.body_errors now describes 400, 415, 422 and each
  route's own statuses with ErrorBody);
- the orchestrator: its errors were FastAPI's `{"detail": ...}`, not contracts/errors.py's shape
  (it now installs the shared handlers); its 404 (unknown model) and 409 (busy, nothing to roll
  back to) were undocumented; a candidate name it refuses (empty, or with a comma) was allowed by
  the description (it now gives the pattern).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from contracts.guard import MAX_BODY_BYTES
from services.local import Processes, wait_http
from services.reports.serving import WINDOW
from tests.conftest import ROOT, free_port, python_env
from tests.fuzzing import REJECTED, fuzz
from tests.gateway_support import make_registry, tracking_uri_restored

pytestmark = pytest.mark.integration

TOKEN = "integration-test-control-token"  # this test's own: never a stack's secret
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}
# Every route that changes something: (service, path, a valid body).
CONTROL_ROUTES = [
    ("monitor", "/alerts", None),
    ("orchestrator", "/alerts", None),
    ("orchestrator", "/retrain", {"model": "latency-predictor"}),
    ("orchestrator", "/rollback", {"model": "latency-predictor"}),
]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The monitor, the orchestrator and the reports as processes: name -> base URL."""
    base = tmp_path_factory.mktemp("service-openapi")
    token = base / "control_token"
    token.write_text(TOKEN + "\n")
    with tracking_uri_restored():
        registry = make_registry(base)
    procs = Processes(log_dir=base / "logs")
    ports = {"monitor": free_port(), "orchestrator": free_port(), "reports": free_port()}
    settings = {
        "monitor": {
            "MONITOR_HOST": "127.0.0.1",
            "MONITOR_PORT": str(ports["monitor"]),
            "CONTROL_TOKEN_FILE": str(token),
        },
        "orchestrator": {
            "TRAINER_TRACKING_URI": registry,
            "TRAINER_RUNNER": "process",
            "MONITORING_DB_URI": "",  # a retraining finds no production data: skipped, not trained
            "ORCHESTRATOR_HOST": "127.0.0.1",
            "ORCHESTRATOR_PORT": str(ports["orchestrator"]),
            "CONTROL_TOKEN_FILE": str(token),
            "EXTRA_ALLOWED_HOSTS": "orchestrator.example",
        },
        "reports": {
            "REPORTS_HOST": "127.0.0.1",
            "REPORTS_PORT": str(ports["reports"]),
            "REPORTS_PUBLIC_URL": f"http://127.0.0.1:{ports['reports']}",
            # No Prometheus: the pages say serving figures are unavailable (test_reports.py).
            "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        },
    }
    urls = {}
    try:
        for name, extra in settings.items():
            env = {**python_env(), "MLFLOW_TRACKING_URI": registry, **extra}
            command = [sys.executable, "-m", f"services.{name}", *(["serve"] if name == "reports" else [])]
            proc = procs.start(name, command, env)
            urls[name] = f"http://127.0.0.1:{ports[name]}"
            wait_http(f"{urls[name]}/health", proc, 60, f"the {name}")
        yield urls
    finally:
        procs.stop_all()


def samples(url: str, metric: str) -> list[tuple[dict[str, str], float]]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == metric
    ]


def test_monitor_holds_to_its_description(services: dict[str, str], tmp_path: Path) -> None:
    fuzz(services["monitor"], tmp_path, max_examples=30, headers=AUTHORIZED)
    received = sum(value for _, value in samples(services["monitor"], "mlops_alerts_received_total"))
    assert received > 0, "no fuzzed alert was accepted: the success path was never reached"


def test_orchestrator_holds_to_its_description(services: dict[str, str], tmp_path: Path) -> None:
    url = services["orchestrator"]
    fuzz(url, tmp_path, max_examples=30, rejected=(*REJECTED, 409), headers=AUTHORIZED)
    started = [labels for labels, value in samples(url, "orchestrator_triggers_total") if value > 0]
    assert any(labels["result"] == "started" for labels in started), started


def test_reports_hold_to_their_description(services: dict[str, str], tmp_path: Path) -> None:
    url = services["reports"]
    fuzz(url, tmp_path, max_examples=30)
    # The registry holds no participant's session: the pages and the leaderboard are empty, not errors.
    board = requests.get(f"{url}/api/leaderboard", timeout=30)
    assert board.status_code == 200 and board.json() == {"targets": {}}, board.text
    assert WINDOW.pattern in requests.get(f"{url}/openapi.json", timeout=30).text  # the window's form


def test_orchestrator_errors_have_the_shared_shape(services: dict[str, str]) -> None:
    url = services["orchestrator"]
    unknown = requests.post(f"{url}/retrain", json={"model": "no-such-model"}, headers=AUTHORIZED, timeout=10)
    assert unknown.status_code == 404
    assert unknown.json()["error_code"] == "NOT_FOUND"
    assert "latency-predictor" in unknown.json()["message"]
    bad = requests.post(
        f"{url}/retrain",
        json={"model": "latency-predictor", "candidates": ["a,b"]},
        headers=AUTHORIZED,
        timeout=10,
    )
    assert bad.status_code == 422
    assert bad.json()["details"][0]["field"] == "candidates.0", bad.json()


def alert(model: str = "latency-predictor") -> dict[str, object]:
    """An Alertmanager notification of one firing alert the orchestrator does not retrain on."""
    return {
        "receiver": "test", "status": "firing", "version": "4", "groupKey": "{}", "truncatedAlerts": 0,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{
            "status": "firing", "labels": {"alertname": "not_a_retraining_alert", "model": model},
            "annotations": {}, "startsAt": "2026-05-04T10:15:30Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus", "fingerprint": "0",
        }],
    }  # fmt: skip


@pytest.mark.parametrize("service, path, body", CONTROL_ROUTES)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Bearer {TOKEN}x", TOKEN])
def test_control_endpoints_refuse_a_call_without_the_token(
    services: dict[str, str], service: str, path: str, body: object, authorization: str | None
) -> None:
    """401 before anything is looked up: an unknown model, or an invalid body, is not revealed."""
    headers = {"Authorization": authorization} if authorization else {}
    url = services[service] + path
    for sent in (body or alert(), {"model": "no-such-model"}, {"alerts": "not a list"}):
        answer = requests.post(url, json=sent, headers=headers, timeout=10)
        assert answer.status_code == 401, answer.text
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert answer.json()["error_code"] == "UNAUTHENTICATED"
        assert set(answer.json()) == {"error_code", "message", "details"}


def test_control_endpoints_answer_with_the_token(services: dict[str, str]) -> None:
    monitor = requests.post(f"{services['monitor']}/alerts", json=alert(), headers=AUTHORIZED, timeout=10)
    assert monitor.status_code == 200 and monitor.json() == {"received": 1}, monitor.text
    url = services["orchestrator"]
    alerts = requests.post(f"{url}/alerts", json=alert(), headers=AUTHORIZED, timeout=10)
    assert alerts.status_code == 200 and alerts.json() == {"triggers": []}, alerts.text
    # No version to roll back to in this registry: 409 says the call got through to the coordinator.
    rollback = requests.post(
        f"{url}/rollback", json={"model": "latency-predictor"}, headers=AUTHORIZED, timeout=10
    )
    assert rollback.status_code == 409, rollback.text
    described = requests.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    for path in ("/alerts", "/retrain", "/rollback"):
        assert described[path]["post"]["security"] == [{"control token": []}], path
    assert "security" not in described["/retrainings"]["get"]
    # The reads stay open.
    for service in ("monitor", "orchestrator"):
        assert requests.get(f"{services[service]}/metrics", timeout=10).status_code == 200
    assert requests.get(f"{url}/retrainings", timeout=10).status_code == 200


@pytest.mark.parametrize("service", ["monitor", "orchestrator", "reports"])
def test_a_foreign_host_header_is_refused(services: dict[str, str], service: str) -> None:
    """DNS rebinding: another site's page in a browser on this machine, its name pointed at 127.0.0.1."""
    url = services[service]
    port = url.rsplit(":", 1)[1]
    for host in (
        "rebound.attacker.example",
        f"rebound.attacker.example:{port}",
        f"{service}.attacker.example",
    ):
        answer = requests.get(f"{url}/health", headers={"Host": host}, timeout=10)
        assert answer.status_code == 400, (host, answer.text)
        assert answer.json()["error_code"] == "MALFORMED_REQUEST"
        assert "Host" in answer.json()["message"]
    for host in (service, f"{service}:{port}", f"localhost:{port}", "127.0.0.1", f"[::1]:{port}"):
        assert requests.get(f"{url}/health", headers={"Host": host}, timeout=10).status_code == 200, host
    extra = requests.get(f"{url}/health", headers={"Host": "orchestrator.example"}, timeout=10)
    assert extra.status_code == (200 if service == "orchestrator" else 400)  # EXTRA_ALLOWED_HOSTS


@pytest.mark.parametrize("service, path", [("monitor", "/alerts"), ("orchestrator", "/retrain"),
                                           ("reports", "/health")])  # fmt: skip
def test_a_body_over_the_limit_is_413(services: dict[str, str], service: str, path: str) -> None:
    big = b'{"pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    headers = {**AUTHORIZED, "Content-Type": "application/json"}
    declared = requests.post(services[service] + path, data=big, headers=headers, timeout=30)
    assert declared.status_code == 413, declared.text
    assert declared.json()["error_code"] == "TOO_LARGE"
    streamed = requests.post(  # chunked, no Content-Length
        services[service] + path, data=iter([big[:1000], big[1000:]]), headers=headers, timeout=30
    )
    assert streamed.status_code == 413, streamed.text


def test_the_orchestrator_cli_sends_the_token(services: dict[str, str], tmp_path: Path) -> None:
    """What `make retrain` and `make rollback` run in the container, with the token file it mounts."""
    token = tmp_path / "control_token"

    def cli(*args: str, token_file: Path = token) -> subprocess.CompletedProcess[str]:
        env = {
            **python_env(),
            "ORCHESTRATOR_URL": services["orchestrator"],
            "CONTROL_TOKEN_FILE": str(token_file),
        }
        command = [sys.executable, "-m", "services.orchestrator", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    token.write_text(TOKEN)
    done = cli("rollback", "latency-predictor")
    assert done.returncode == 1 and "orchestrator: 409:" in done.stderr, (
        done.stderr
    )  # through, nothing to roll back
    busy = lambda: requests.get(f"{services['orchestrator']}/retrainings", timeout=10).json()  # noqa: E731
    deadline = time.monotonic() + 60
    while busy()["bandwidth-efficiency-predictor"]["busy"]:
        assert time.monotonic() < deadline, "a fuzzed retraining did not end"
        time.sleep(0.5)
    done = cli("retrain", "bandwidth-efficiency-predictor", "--reason", "cli test")
    assert done.returncode == 0, done.stderr
    assert '"result":"started"' in done.stdout.replace(" ", "")

    token.write_text("a-wrong-token")
    done = cli("rollback", "latency-predictor")
    assert done.returncode == 1 and "orchestrator: 401:" in done.stderr, done.stderr
    done = cli("rollback", "latency-predictor", token_file=tmp_path / "missing")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"orchestrator: error: cannot read the control token file {tmp_path / 'missing'}: "
        "No such file or directory (set CONTROL_TOKEN_FILE)"
    ]
