"""The orchestrator's fixed parts: the Docker policy refuses anything but the trainer run, triggers are
deduplicated and cooled down, the production window splits by time, and settings fail in one line."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from contracts.errors import install_error_handlers
from contracts.guard import ControlToken
from contracts.models import MODELS
from contracts.settings import SettingsError
from services.local import child_env
from services.orchestrator import Settings
from services.orchestrator.app import schedule
from services.orchestrator.coordinator import Coordinator, Trigger, plain_candidates
from services.orchestrator.metrics import OrchestratorMetrics
from services.orchestrator.production import Window
from services.orchestrator.routes import control, status
from services.orchestrator.routes.deps import get_coordinator
from services.orchestrator.runner import DockerRunner, Job, Outcome, PolicyError
from tests.conftest import ROOT, free_port

RUN_ID = "0123456789abcdef0123456789abcdef"


def settings(**overrides: Any) -> Settings:
    values = {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
        "MONITORING_DB_URI": "postgresql://u@127.0.0.1:1/monitoring",
        "TRAINER_IMAGE": "mlops/trainer:1.0",
        "TRAINER_NETWORK": "mlops_default",
        **overrides,
    }
    return Settings.from_env(values)


class RefusingDocker:
    """Stands where the docker SDK client would: any call reaching it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the policy let a request reach Docker ({name})")


@pytest.fixture
def runner() -> DockerRunner:
    return DockerRunner(settings(), client=RefusingDocker())


def request(runner: DockerRunner, **changes: Any) -> dict[str, Any]:
    job = Job(RUN_ID, {"target": "latency_ms", "models": "random-forest", "trigger": "alert:x"})
    return {**runner.container_request(job, "sha256:abc"), **changes}


def test_the_trainer_request_passes_the_policy(runner: DockerRunner) -> None:
    accepted = request(runner)
    runner.check(accepted)
    assert accepted["image"] == "mlops/trainer:1.0" and accepted["network"] == "mlops_default"
    assert accepted["cap_drop"] == ["ALL"] and accepted["read_only"] is True
    # What docker-compose.yml gives every service (tests/static/test_hardening.py): not root, no
    # privilege gain, memory without extra swap, CPU and process limits.
    assert accepted["user"] == "1000:1000" and accepted["security_opt"] == ["no-new-privileges"]
    assert accepted["memswap_limit"] == accepted["mem_limit"] == "3g"
    assert accepted["nano_cpus"] == 1_500_000_000 and accepted["pids_limit"] == 512
    assert accepted["command"][:3] == ["run", "/app/trainer", "-e"]


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"image": "alpine:3"}, "refused image"),
        ({"volumes": {"/": {"bind": "/host", "mode": "rw"}}}, "refused container arguments ['volumes']"),
        ({"mounts": ["/var/run/docker.sock"]}, "refused container arguments ['mounts']"),
        ({"privileged": True}, "refused container arguments ['privileged']"),
        ({"cap_add": ["SYS_ADMIN"]}, "refused container arguments ['cap_add']"),
        ({"devices": ["/dev/kmsg"]}, "refused container arguments"),
        ({"pid_mode": "host"}, "refused container arguments"),
        ({"network": "bridge"}, "refused network"),
        ({"network_mode": "host"}, "refused network"),
        ({"entrypoint": ["sh"]}, "refused command"),
        ({"command": ["run", "/etc", "-e", "retrain"]}, "refused command"),
        ({"cap_drop": []}, "refused cap_drop"),
        ({"read_only": False}, "refused read_only"),
        ({"security_opt": []}, "refused security_opt"),
        ({"security_opt": ["no-new-privileges", "seccomp=unconfined"]}, "refused security_opt"),
        ({"user": "root"}, "refused user"),
        ({"user": "0:0"}, "refused user"),
        ({"user": None}, "refused user"),
        ({"memswap_limit": "100g"}, "refused memswap_limit"),
        ({"pids_limit": None}, "refused pids_limit"),
        ({"pids_limit": -1}, "refused pids_limit"),
        ({"nano_cpus": 4_000_000_000}, "refused CPU limit"),
        ({"userns_mode": "host"}, "refused container arguments"),
        ({"mem_limit": None}, "refused mem_limit"),
        ({"nano_cpus": 0}, "refused CPU limit"),
        ({"tmpfs": {"/tmp": "", "/etc": ""}}, "refused tmpfs"),
        ({"environment": {"LD_PRELOAD": "/tmp/x.so"}}, "refused environment"),
    ],
)
def test_the_policy_refuses_anything_else(
    runner: DockerRunner, changes: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(PolicyError, match=refusal.replace("[", r"\[").replace("]", r"\]")):
        runner.start(request(runner, **changes))


@pytest.mark.parametrize(
    "params",
    [
        {"target": "latency_ms; rm -rf /"},
        {"target": "$(id)"},
        {"entry": "x"},
        {"models": "a b"},
    ],
)
def test_the_policy_refuses_unknown_or_unsafe_parameters(
    runner: DockerRunner, params: dict[str, str]
) -> None:
    job_request = runner.container_request(Job(RUN_ID, params), "sha256:abc")
    with pytest.raises(PolicyError):
        runner.start(job_request)


def test_the_policy_refuses_a_run_id_that_is_not_one(runner: DockerRunner) -> None:
    with pytest.raises(PolicyError, match="not an MLflow run id"):
        runner.start(runner.container_request(Job("--privileged", {}), "sha256:abc"))


def test_candidates_from_a_request_must_be_plain_names() -> None:
    assert plain_candidates(["random-forest"]) == ("random-forest",)
    for bad in (["a,b"], ["x y"], ["$(id)"]):
        with pytest.raises(ValueError, match="not a plain name"):
            plain_candidates(bad)


class BlockingRunner:
    """A trainer that runs until released (the retraining under test never reaches a database)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def run(self, job: Job) -> Outcome:
        self.release.wait(30)
        return Outcome(1, "test", "released")


def test_triggers_are_deduplicated_and_automatic_ones_cool_down(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    coordinator = Coordinator(
        settings(RETRAIN_COOLDOWN_S="600"),
        None,
        BlockingRunner(),
        OrchestratorMetrics.create(),
        lambda: now[0],  # type: ignore[arg-type]
    )
    started = threading.Event()
    # The retraining itself: held busy until the test lets it finish.
    finish = threading.Event()

    def fake_retrain(state: Any, trigger: Trigger) -> None:
        started.set()
        finish.wait(10)
        with coordinator._lock:
            state.busy, state.finished_at = None, now[0]

    monkeypatch.setattr(coordinator, "_retrain", fake_retrain)
    model = MODELS[0].name
    assert coordinator.trigger(model, Trigger("alert:feature_drift_detected")).result == "started"
    assert started.wait(5)
    # While it runs, every trigger is recorded, none queued.
    assert coordinator.trigger(model, Trigger("alert:feature_drift_detected")).result == "busy"
    assert coordinator.trigger(model, Trigger("manual", automatic=False)).result == "busy"
    finish.set()
    for thread in coordinator._threads:
        thread.join(5)
    # Cooling down: automatic triggers wait, on-demand ones do not.
    now[0] += 60
    assert coordinator.trigger(model, Trigger("schedule")).result == "cooldown"
    started.clear()
    finish.clear()
    assert coordinator.trigger(model, Trigger("manual", automatic=False)).result == "started"
    finish.set()
    for thread in coordinator._threads:
        thread.join(5)
    now[0] += 601
    assert coordinator.trigger(model, Trigger("schedule")).result == "started"
    finish.set()
    history = coordinator.status()[model]["triggers"]
    assert [t["result"] for t in history] == ["started", "busy", "busy", "cooldown", "started", "started"]
    samples = {
        (s.labels["trigger"], s.labels["result"]): s.value
        for metric in coordinator.metrics.registry.collect()
        if metric.name == "orchestrator_triggers"
        for s in metric.samples
        if s.name.endswith("_total")
    }
    assert samples[("alert:feature_drift_detected", "busy")] == 1
    assert samples[("schedule", "cooldown")] == 1


def test_the_window_holds_out_its_newest_rows() -> None:
    rows = pd.DataFrame({"x": range(10), "ts": [f"2026-12-01T00:00:{i:02d}" for i in range(10)]})
    window = Window(MODELS[0], datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC), rows)
    train, holdout = window.split(0.3)
    assert list(train["x"]) == list(range(7)) and list(holdout["x"]) == [7, 8, 9]
    empty = Window(MODELS[0], window.start, window.end, rows.iloc[:0])
    assert [len(part) for part in empty.split(0.3)] == [0, 0]


def test_schedule_is_off_by_default_and_cron_otherwise() -> None:
    assert schedule("") is None
    cron = schedule("0 3 * * *")
    assert cron is not None
    fire = cron.get_next_fire_time(None, datetime(2026, 12, 1, 12, tzinfo=UTC))
    assert fire == datetime(2026, 12, 2, 3, tzinfo=UTC)
    with pytest.raises(ValueError, match="RETRAIN_SCHEDULE '61 \\* \\* \\* \\*' is not a cron expression"):
        schedule("61 * * * *")


def test_settings_refuse_an_unknown_runner() -> None:
    with pytest.raises(SettingsError, match="TRAINER_RUNNER must be docker, kubernetes or process"):
        settings(TRAINER_RUNNER="ssh")


def test_service_exits_with_one_line_when_a_setting_is_missing() -> None:
    env = child_env({"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"})
    env.pop("MONITORING_DB_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", "services.orchestrator"], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["orchestrator: error: MONITORING_DB_URI: Field required"]


def test_the_cli_refuses_an_unknown_model_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.orchestrator", "retrain", "no-such-model"],
        env=child_env({}), cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "unknown model(s) no-such-model" in done.stderr


# --- The routes alone: each router on a bare FastAPI app, the coordinator given by override. ------


TOKEN = "unit-test-control-token"


@pytest.fixture
def routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Coordinator]]:
    """control.router and status.router on an app of their own, with the shared error handlers, a
    coordinator whose retraining only marks the model done, and the control token in the app's state."""
    coordinator = Coordinator(settings(), None, BlockingRunner(), OrchestratorMetrics.create())  # type: ignore[arg-type]

    def finish(state: Any, trigger: Trigger) -> None:
        with coordinator._lock:
            state.busy = None

    monkeypatch.setattr(coordinator, "_retrain", finish)
    token = tmp_path / "control_token"
    token.write_text(TOKEN)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(control.router)
    app.include_router(status.router)
    app.state.control_token = ControlToken(token)
    app.dependency_overrides[get_coordinator] = lambda: coordinator
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client, coordinator
    for thread in coordinator._threads:
        thread.join(5)


def firing(alertname: str, model: str, status: str = "firing") -> dict[str, Any]:
    """An Alertmanager notification of one alert."""
    return {
        "receiver": "orchestrator", "status": status, "version": "4", "groupKey": "{}", "truncatedAlerts": 0,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{
            "status": status, "labels": {"alertname": alertname, "model": model},
            "annotations": {"summary": "drifted"}, "startsAt": "2026-05-04T10:15:30Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus", "fingerprint": "0",
        }],
    }  # fmt: skip


def test_retrain_starts_refuses_a_busy_or_unknown_model_and_needs_the_token(
    routes: tuple[TestClient, Coordinator],
) -> None:
    client, coordinator = routes
    model = MODELS[0].name
    started = client.post("/retrain", json={"model": model, "reason": "a test"})
    assert started.status_code == 202 and started.json() == {"model": model, "result": "started"}
    for thread in coordinator._threads:
        thread.join(5)  # the retraining (its stand-in) is over: the model is free
    coordinator.states[model].busy = "watching"
    busy = client.post("/retrain", json={"model": model})
    assert busy.status_code == 409 and busy.json()["error_code"] == "CONFLICT", busy.text
    assert f"{model} is busy" in busy.json()["message"]
    unknown = client.post("/retrain", json={"model": "no-such-model"})
    assert unknown.status_code == 404 and model in unknown.json()["message"]
    bad = client.post("/retrain", json={"model": model, "candidates": ["a,b"]})
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "candidates.0"
    refused = client.post("/retrain", json={"model": model}, headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    # What reached the coordinator is what /retrainings reports.
    history = client.get("/retrainings").json()[model]["triggers"]
    assert [(t["kind"], t["result"], t["detail"]) for t in history] == [
        ("manual", "started", "a test"),
        ("manual", "busy", "on demand"),
    ]


def test_alerts_trigger_only_firing_retraining_alerts_of_known_models(
    routes: tuple[TestClient, Coordinator],
) -> None:
    client, coordinator = routes
    model = MODELS[0].name
    for ignored in (
        firing("not_a_retraining_alert", model),
        firing("feature_drift_detected", "no-such-model"),
        firing("feature_drift_detected", model, status="resolved"),
    ):
        answer = client.post("/alerts", json=ignored)
        assert answer.status_code == 200 and answer.json() == {"triggers": []}, ignored
    answer = client.post("/alerts", json=firing("feature_drift_detected", model))
    assert answer.json() == {
        "triggers": [{"model": model, "trigger": "alert:feature_drift_detected", "result": "started"}]
    }
    assert [t.kind for t in coordinator.states[model].triggers] == ["alert:feature_drift_detected"]
    assert client.post("/alerts", json=firing("x", model), headers={"Authorization": ""}).status_code == 401
    assert "orchestrator_triggers_total{" in client.get("/metrics").text
    assert client.get("/health").json() == {"status": "ok"}


def test_the_cli_posts_with_the_control_token_and_reports_a_refusal(tmp_path: Path) -> None:
    """`python -m services.orchestrator rollback|retrain` against a loopback stand-in for the
    orchestrator: the body and the bearer token arrive; a 2xx answer is printed and exits 0, any
    other status goes to stderr with exit 1; nothing listening is one line."""
    received: list[tuple[str, str, dict[str, Any]]] = []
    answers = iter([(200, b'{"started": true}'), (409, b'{"message": "a retraining is running"}')])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((self.path, self.headers["Authorization"], body))
            status, content = next(answers)
            self.send_response(status)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o600)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    model = MODELS[0].name

    def cli(*args: str, url: str = f"http://127.0.0.1:{server.server_address[1]}") -> Any:
        env = child_env({"ORCHESTRATOR_URL": url, "CONTROL_TOKEN_FILE": str(token)})
        command = [sys.executable, "-m", "services.orchestrator", *args]
        return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)

    try:
        done = cli("rollback", model, "--reason", "test")
        assert (done.returncode, done.stdout.strip()) == (0, '{"started": true}'), done.stderr
        refused = cli("retrain", model, "--candidates", "random-forest")
        assert refused.returncode == 1
        assert refused.stderr.strip() == 'orchestrator: 409: {"message": "a retraining is running"}'
    finally:
        server.shutdown()
        server.server_close()
    retrain = {"model": model, "reason": "on demand", "candidates": ["random-forest"]}
    assert received == [
        ("/rollback", "Bearer s3cret-token", {"model": model, "reason": "test"}),
        ("/retrain", "Bearer s3cret-token", retrain),
    ]
    gone = cli("rollback", model, url=f"http://127.0.0.1:{free_port()}")
    assert gone.returncode == 1 and len(gone.stderr.strip().splitlines()) == 1
    assert "cannot reach" in gone.stderr and "make up" in gone.stderr
