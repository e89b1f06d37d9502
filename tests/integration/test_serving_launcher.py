"""The serving launcher (`python -m services.serving`) as a real process, with a real MLflow server
(SQLite backend) and real `mlflow models serve`: it stops promptly on SIGTERM, also while the
tracking server it waits for is unreachable (`docker compose stop` must not wait for MLflow's
minutes of client retries); it tells a missing alias from a missing server; and it knows a model
server is ready by its answers, not by its log text."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from contracts.models import served_version
from services.local import Processes, child_env, start_mlflow
from tests.conftest import ROOT, free_port
from tests.integration.test_platform import Hammer

pytestmark = pytest.mark.integration


def test_sigterm_stops_a_launcher_waiting_for_an_unreachable_tracking_server() -> None:
    env = child_env(
        {
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "SERVING_MODEL_NAME": "latency-predictor",
            "SERVING_HOST": "127.0.0.1",
            "SERVING_PORT": str(free_port()),
            "SERVING_POLL_S": "1",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.serving"], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:  # the launcher says what it waits for, in the one log format
            if "waiting for tracking server" in line:
                assert json.loads(line)["service"] == "serving"
                break
            assert time.monotonic() < deadline, "the launcher did not report what it waits for"
        time.sleep(3)  # inside MLflow's client retries by now
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - stopped < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("launcher")
    procs = Processes(log_dir=data_dir / "logs")
    try:
        yield start_mlflow(procs, f"sqlite:///{data_dir / 'mlflow.db'}", data_dir, free_port())
    finally:
        procs.stop_all()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(log_dir=tmp_path)
    yield procs
    procs.stop_all()


def start_launcher(
    procs: Processes, tracking: str, name: str, port: int, **env: str
) -> subprocess.Popen[bytes]:
    settings = {
        "MLFLOW_TRACKING_URI": tracking, "SERVING_MODEL_NAME": name, "SERVING_HOST": "127.0.0.1",
        "SERVING_PORT": str(port), "SERVING_POLL_S": "1", "SERVING_WATCH_S": "1",
    }  # fmt: skip
    return procs.start("launcher", [sys.executable, "-m", "services.serving"], {**settings, **env})


def wait_until(
    check: Any, what: str, proc: subprocess.Popen[bytes], procs: Processes, timeout: float = 180
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"the launcher exited: {procs.tail('launcher')}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {procs.tail('launcher')}"
        time.sleep(0.3)


def constant_model(value: float) -> PythonModel:
    class Constant(PythonModel):  # defined here: pickled by value, not by reference
        # No type hints (MLflow warns): they would become the model's input schema.
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return [value] * len(model_input)

    return Constant()


def register_versions(tracking: str, name: str, count: int) -> None:
    """Versions 1..count of `name`; version v predicts v for every row. No alias is set."""
    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment("launcher-test")
    for value in range(1, count + 1):
        with mlflow.start_run():
            mlflow.pyfunc.log_model(
                name="model", python_model=constant_model(float(value)), registered_model_name=name,
                pip_requirements=[],
            )  # fmt: skip


def test_a_model_without_the_alias_is_reported_as_such(tracking: str, procs: Processes) -> None:
    """MLflow answers INVALID_PARAMETER_VALUE for a known model whose alias is not set: that is a
    missing alias (train a model), not an unreachable tracking server."""
    name = "registered-without-alias"
    MlflowClient(tracking).create_registered_model(name)
    proc = start_launcher(procs, tracking, name, free_port())
    expected = (
        f"waiting for models:/{name}@production: no such model or alias yet (train a model: make train)"
    )
    wait_until(lambda: expected in procs.tail("launcher"), "the missing-alias message", proc, procs, 60)
    assert "waiting for tracking server" not in procs.tail("launcher", 1000)


def test_readiness_comes_from_the_new_server_answering_not_from_its_log(
    tracking: str, procs: Processes
) -> None:
    """uvicorn logs nothing at warning level ("Application startup complete" never appears): the
    launcher still serves the first version, rolls to the next without a failed request, and says
    which version answered in every response."""
    name = "silent-server"
    register_versions(tracking, name, 2)
    client = MlflowClient(tracking)
    client.set_registered_model_alias(name, "production", "1")
    port = free_port()
    proc = start_launcher(procs, tracking, name, port, UVICORN_LOG_LEVEL="warning")
    url = f"http://127.0.0.1:{port}/invocations"

    def served() -> str | None:
        return served_version(f"http://127.0.0.1:{port}")

    wait_until(lambda: served() == "1", "version 1 to be served", proc, procs)
    first = requests.post(url, json={"dataframe_records": [{"x": 0}]}, timeout=30)
    assert (first.json()["predictions"], first.headers["X-Model-Version"]) == ([1.0], "1")

    hammer = Hammer(url, {"dataframe_records": [{"x": 0}]})
    try:
        client.set_registered_model_alias(name, "production", "2")
        wait_until(
            lambda: served() == "2" and hammer.versions[-1:] == ["2"], "the rollout to version 2", proc, procs
        )
    finally:
        hammer.stop()
    assert hammer.failures == [], hammer.failures
    assert hammer.repeated <= 2, f"{hammer.repeated} requests closed without an answer in one rollout"
    assert set(hammer.versions) <= {"1", "2"}
    assert "startup complete" not in procs.tail("launcher", 10_000)
