"""Faults while the platform works, on the compose stack (`make e2e`).

Postgres, MLflow and the S3 store are each restarted (`docker compose restart`) while a training
session runs (`make train`) and predictions with feedback flow through the gateway. After each fault:
- the trainer completed, or marked its runs FAILED and exited non-zero with one readable line;
- every version registered meanwhile carries its gate decision: no half-registered version;
- the runs, versions and artifacts stored before are all still there;
- every prediction the gateway answered is in the prediction log, with its feedback, and the
  gateway's dropped-rows counter stays 0;
- no prediction failed: serving needs none of the three once its model is loaded.

The gateway is restarted and recreated under traffic too: no prediction may fail.

Recovery times are printed and written to $FAULT_TIMINGS (infra/e2e.sh prints them): until MLflow
answers reads again, until its artifacts come back from S3, until the prediction log has caught up.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from tests.stack.stack import ADMIN, ENV, GATEWAY, MLFLOW, REQUEST, ROOT, prometheus_query, record_fault

LATENCY = "latency-predictor"


@pytest.fixture(scope="module")
def client() -> MlflowClient:
    return MlflowClient(MLFLOW)


def compose(*args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        ["docker", "compose", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"docker compose {' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout


def monitoring_rows(since: float) -> dict[str, bool]:
    """request_id -> has feedback, for the prediction-log rows since `since` (epoch seconds). psql in
    the Postgres container: its port is published only in the loopback stack."""
    query = (
        "SELECT p.request_id, f.request_id IS NOT NULL FROM predictions AS p "
        f"LEFT JOIN feedback AS f ON f.request_id = p.request_id WHERE p.ts >= to_timestamp({since - 5})"
    )
    out = compose(
        "exec", "-T", "postgres", "psql", "-U", ENV["POSTGRES_USER"], "-d", "monitoring", "-tAF", ",",
        "-c", query,
    )  # fmt: skip
    return {rid: flag == "t" for rid, flag in (line.split(",") for line in out.splitlines() if line)}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `condition` held (exceptions count as not yet); fails after `timeout`."""
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except Exception:  # noqa: BLE001 (a service still down: not yet)
            pass
        assert time.monotonic() - started < timeout, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.5)


class Traffic:
    """Two clients predicting through the gateway (about 10 requests/s each), feedback for every
    other answer. Records every answered request id, every feedback accepted, and every failure."""

    def __init__(self) -> None:
        self.answered: list[str] = []
        self.fed_back: list[str] = []
        self.failures: list[str] = []
        # Feedback answered 200 with the id unknown: its prediction not in the log. Always 0: feedback
        # is matched in Postgres, whichever replica (or replaced gateway) answered the prediction.
        self.unknown = 0
        self.feedback_retries = 0  # feedback answered 503 (the log cannot be read), sent again
        self.slowest_s = 0.0  # the longest a request (prediction or feedback) took, waits included
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(2)]
        for thread in self._threads:
            thread.start()

    def _client(self, index: int) -> None:
        records = REQUEST["dataframe_records"][:1]
        session = requests.Session()
        n = 0
        while not self._stop.wait(0.1):
            n += 1
            try:
                answer = self._timed(session, "predict", {"records": records})
                if answer.status_code != 200:
                    self.failures.append(f"predict HTTP {answer.status_code}: {answer.text[:200]}")
                    continue
                request_id = answer.json()["request_ids"][0]
                self.answered.append(request_id)
                if n % 2:
                    continue
                feedback = {"feedback": [{"request_id": request_id, "actual": 42.0}]}
                posted = self._timed(session, "feedback", feedback)
                # While Postgres is down feedback cannot be matched: 503 + Retry-After, nothing kept;
                # a client sends it again (for up to two minutes here).
                for _ in range(60):
                    if posted.status_code != 503 or self._stop.is_set():
                        break
                    self.feedback_retries += 1
                    time.sleep(float(posted.headers.get("Retry-After", "2")))
                    posted = self._timed(session, "feedback", feedback)
                if posted.status_code == 200 and posted.json()["accepted"] == 1:
                    self.fed_back.append(request_id)
                elif posted.status_code == 200 and posted.json()["unknown"] == [request_id]:
                    self.unknown += 1
                else:
                    self.failures.append(f"feedback HTTP {posted.status_code}: {posted.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}"[:300])

    def _timed(self, session: requests.Session, endpoint: str, body: Any) -> requests.Response:
        sent = time.monotonic()
        answer = session.post(f"{GATEWAY}/models/{LATENCY}/{endpoint}", json=body, timeout=30)
        self.slowest_s = max(self.slowest_s, time.monotonic() - sent)
        return answer

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def assert_every_answer_logged(self, since: float) -> float:
        """No prediction failed, every feedback was matched, every answer is in the prediction log
        with its feedback, and the gateway dropped no row; the seconds until the log had caught up."""
        assert self.failures == [], self.failures[:5]
        assert self.unknown == 0, f"{self.unknown} feedback posts answered unknown"
        answered, fed_back = set(self.answered), set(self.fed_back)

        def logged() -> bool:
            rows = monitoring_rows(since)
            return answered <= rows.keys() and all(rows[r] for r in fed_back)

        caught_up_s = wait_until(logged, 180, "every answered prediction and its feedback in the log")
        dropped = prometheus_query("sum(gateway_prediction_log_dropped_total)")
        assert dropped and float(dropped[0]["value"][1]) == 0, dropped  # type: ignore[index]
        return caught_up_s


def stored(client: MlflowClient) -> dict[str, object]:
    """What a fault must not take away: finished runs, registered versions, the default session's
    artifact listings."""
    experiments = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    runs = client.search_runs(experiments, filter_string="attributes.status = 'FINISHED'", max_results=5000)
    session = client.get_experiment_by_name(ENV["PARTICIPANT"])
    assert session is not None
    children = client.search_runs([session.experiment_id], "tags.mlflow.parentRunId != ''", max_results=100)
    return {
        "runs": {r.info.run_id for r in runs},
        "versions": {(v.name, v.version, v.run_id) for v in client.search_model_versions(max_results=10000)},
        "artifacts": {
            r.info.run_id: sorted(a.path for a in client.list_artifacts(r.info.run_id)) for r in children
        },
    }


@pytest.mark.parametrize("service", ["postgres", "mlflow", "minio"])
def test_a_restart_during_training_and_traffic_loses_nothing(client: MlflowClient, service: str) -> None:
    before = stored(client)
    started = time.time()
    experiment = f"e2e-faults-{service}"
    traffic = Traffic()
    args = f"--n-rows 4000 --models lr,rf --participant {experiment} --no-promote"
    # As `make train` runs for anyone: the trainer account, not the tests' admin login.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    trainer = subprocess.Popen(
        ["make", "--no-print-directory", "train", f"ARGS={args}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: bool(client.search_runs([client.get_experiment_by_name(experiment).experiment_id])),  # type: ignore[union-attr]
            600,
            "the training session's first run",
        )
        fault = time.monotonic()
        compose("restart", service)
        restarted_s = time.monotonic() - fault
        # Plain HTTP, not MLflow's client: its retries back off for minutes and would blur the figure.
        # A candidate's plot: the session's gate-* runs (children too) log no plots.
        artifacts: dict[str, list[str]] = before["artifacts"]  # type: ignore[assignment]
        run_id = next(run for run, paths in artifacts.items() if "plots" in paths)
        search = f"{MLFLOW}/api/2.0/mlflow/experiments/search?max_results=1"
        reads_s = wait_until(lambda: requests.get(search, auth=ADMIN, timeout=5).ok, 300, "MLflow reads")
        artifact = {"path": "plots/predicted_vs_actual.png", "run_uuid": run_id}
        artifacts_s = wait_until(
            lambda: requests.get(f"{MLFLOW}/get-artifact", params=artifact, auth=ADMIN, timeout=10).ok,
            300,
            "artifacts through MLflow",
        )
        _, err = trainer.communicate(timeout=1200)
    finally:
        if trainer.poll() is None:
            trainer.kill()
        traffic.stop()

    # The trainer: completed, or every run FAILED and one readable line.
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=100)
    statuses = {r.info.run_id: r.info.status for r in runs}
    said = [line for line in err.splitlines() if line.startswith("trainer: error:")]
    if trainer.returncode == 0:
        assert set(statuses.values()) == {RunStatus.to_string(RunStatus.FINISHED)}, statuses
    else:
        assert len(said) == 1 and "Traceback" not in err, err[-3000:]
        assert RunStatus.to_string(RunStatus.RUNNING) not in statuses.values(), statuses
    # No half-registered version: each version made meanwhile says what the gate decided.
    for version in client.search_model_versions(max_results=10000):
        if version.creation_timestamp >= started * 1000:
            tags = client.get_model_version(version.name, version.version).tags
            assert "promotion.decision" in tags, (version.name, version.version, tags)
    # Nothing stored before is gone.
    after = stored(client)
    assert before["runs"] <= after["runs"]  # type: ignore[operator]
    assert before["versions"] <= after["versions"]  # type: ignore[operator]
    assert before["artifacts"] == after["artifacts"]
    # Predictions never failed, and every answer is in the log with its feedback.
    assert len(traffic.answered) > 100
    caught_up_s = traffic.assert_every_answer_logged(started)
    record_fault(
        f"{service} restart",
        {
            "trainer_exit": trainer.returncode,
            "trainer_said": said[0][:300] if said else "",
            "runs": len(statuses),
            "restart_s": round(restarted_s, 1),
            "mlflow_reads_after_s": round(reads_s, 1),
            "artifacts_after_s": round(artifacts_s, 1),
            "log_caught_up_after_s": round(caught_up_s, 1),
            "predictions": len(traffic.answered),
            "feedback": len(traffic.fed_back),
            "feedback_retried": traffic.feedback_retries,
        },
    )


@pytest.mark.parametrize("how", ["restart", "recreate"])
def test_replacing_the_gateway_under_traffic_fails_no_request(how: str) -> None:
    """`docker compose restart gateway`, and recreating its containers as an image upgrade does
    (`up --force-recreate`), every replica at once, while predictions and feedback flow.
    gateway-listener holds the published socket (services/listener), so clients wait in its backlog
    for the new gateways instead of being refused; the old ones drain and write their prediction log
    first, and feedback for what they answered is still matched (in Postgres)."""
    started = time.time()
    traffic = Traffic()
    try:
        wait_until(lambda: len(traffic.answered) >= 20, 120, "20 predictions through the gateway")
        fault = time.monotonic()
        if how == "restart":
            compose("restart", "gateway")
        else:
            compose("up", "-d", "--no-deps", "--no-build", "--force-recreate", "gateway")
        replaced_s = time.monotonic() - fault
        answered = len(traffic.answered)
        answering_s = wait_until(
            lambda: len(traffic.answered) >= answered + 20, 180, "the new gateway answering"
        )
    finally:
        traffic.stop()
    caught_up_s = traffic.assert_every_answer_logged(started)
    record_fault(
        f"gateway {how}",
        {
            "compose_s": round(replaced_s, 1),
            "answering_after_s": round(answering_s, 1),
            "slowest_request_s": round(traffic.slowest_s, 1),
            "log_caught_up_after_s": round(caught_up_s, 1),
            "predictions": len(traffic.answered),
            "feedback": len(traffic.fed_back),
            "feedback_unknown": traffic.unknown,
        },
    )


def test_a_full_volume_stops_the_trainer_in_one_line_and_loses_nothing(client: MlflowClient) -> None:
    """The trainer's scratch space (TMPDIR, where it writes plots and models before the upload) on a
    16 KiB tmpfs volume: the first artifact fills it. The trainer says so in one line and exits
    non-zero, its runs are FAILED, no version is registered, and nothing stored before is touched."""
    before = stored(client)
    volume = f"{os.environ['COMPOSE_PROJECT_NAME']}-full-volume"
    subprocess.run(
        ["docker", "volume", "create", "--driver", "local", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
         "--opt", "o=size=16k,uid=1000,gid=1000",
         "--label", f"com.docker.compose.project={os.environ['COMPOSE_PROJECT_NAME']}", volume],
        check=True, capture_output=True,
    )  # fmt: skip
    experiment = "e2e-full-volume"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    try:
        done = subprocess.run(
            ["docker", "compose", "run", "--rm", "-T", "--pull", "never", "-v", f"{volume}:/scratch",
             "-e", "TMPDIR=/scratch", "trainer", "--n-rows", "2000", "--models", "lr",
             "--participant", experiment],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)
    assert done.returncode != 0, done.stdout[-2000:]
    said = [line for line in done.stderr.splitlines() if line.startswith("trainer: error:")]
    assert len(said) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "No space left on device" in said[0], said
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert {r.info.status for r in runs} == {RunStatus.to_string(RunStatus.FAILED)}, runs
    after = stored(client)
    # None registered from its runs. Others may be registered meanwhile: one was, once, in `make e2e`
    # (most likely the closed loop retraining: the faults' traffic posts feedback far from the truth).
    ours = {r.info.run_id for r in runs}
    assert not {v for v in after["versions"] if v[2] in ours}, after["versions"]  # type: ignore[attr-defined]
    assert before["versions"] <= after["versions"]  # type: ignore[operator]
    assert before["runs"] <= after["runs"] and before["artifacts"] == after["artifacts"]  # type: ignore[operator]
