"""The closed loop on real processes: Postgres holding a prediction log with feedback, an MLflow server,
and the real trainer run by `mlflow run trainer -e retrain` (the orchestrator's process runner).

The model servers' part (answering as the version they serve) is played by the test with a loopback
HTTP server per model; the compose stack end to end (tests/stack) runs the serving launcher, the
gateway and Prometheus too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg2
import pytest
from mlflow.tracking import MlflowClient
from psycopg2.extras import Json, execute_values

from contracts import synthetic
from contracts.experiments import RETRAINING_EXPERIMENT
from contracts.models import MODELS, PRODUCTION, format_upstreams, model_for_target
from contracts.predlog_migrations import apply_schema
from contracts.schema import FEATURE_NAMES
from contracts.settings import libpq_uri
from services.local import Processes, child_env, start_mlflow
from services.orchestrator import Settings
from services.orchestrator.coordinator import ENDED_BY_TAG, INTERRUPTED, Coordinator, Trigger
from services.orchestrator.metrics import OrchestratorMetrics
from services.orchestrator.runner import ProcessRunner
from tests.conftest import ROOT, free_port, fresh_database
from tests.serving_support import ModelServerPing
from trainer.register import BASELINE_TAG, BASELINE_VERSION_TAG

pytestmark = pytest.mark.integration

LATENCY = model_for_target("latency_ms")
BANDWIDTH = model_for_target("bandwidth_efficiency")
REFERENCE_ROWS = 3000


@dataclass
class Loop:
    client: MlflowClient
    coordinator: Coordinator
    db: str
    serving: dict[str, ModelServerPing]  # what each model's server answers as


def insert_predictions(
    db: str, model: str, version: str, rows: list[dict], start: datetime, error: float
) -> None:
    """Labelled rows as the gateway logs them: features, prediction (actual * `error`), feedback."""
    ids = [f"{model}-{version}-{start.timestamp()}-{i}" for i in range(len(rows))]
    values = [
        (start + timedelta(milliseconds=i), rid, model, version, Json({k: row[k] for k in FEATURE_NAMES}),
         row["actual"] * error, 1.0)
        for i, (rid, row) in enumerate(zip(ids, rows, strict=True))
    ]  # fmt: skip
    feedback = [(rid, model, row["actual"], start) for rid, row in zip(ids, rows, strict=True)]
    with psycopg2.connect(libpq_uri(db)) as conn, conn.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO predictions (ts, request_id, model, version, features, prediction, latency_ms) "
            "VALUES %s",
            values,
        )
        execute_values(cur, "INSERT INTO feedback (request_id, model, actual, ts) VALUES %s", feedback)
    conn.close()


def drifted_rows(n: int, seed: int, target: str) -> list[dict]:
    frame = synthetic.generate(n, seed=seed, drift=1.0)
    return [{**row, "actual": row[target]} for row in frame.to_dict(orient="records")]


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def loop(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    base = tmp_path_factory.mktemp("orchestrator")
    procs = Processes(log_dir=base / "logs")
    serving = {m.name: ModelServerPing() for m in MODELS}
    try:
        tracking = start_mlflow(procs, f"sqlite:///{base / 'mlflow.db'}", base, free_port())
        env = child_env({"MLFLOW_TRACKING_URI": tracking})
        trained = subprocess.run(
            [sys.executable, "-m", "trainer", "--participant", "loop", "--n-rows", str(REFERENCE_ROWS),
             "--models", "random-forest", "--targets", "latency_ms"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert trained.returncode == 0, trained.stderr[-3000:]
        db = fresh_database(postgres_uri, "orchestrator_monitoring")
        apply_schema(db)
        settings = Settings.from_env(
            dict(
                MLFLOW_TRACKING_URI=tracking,
                MONITORING_DB_URI=db,
                TRAINER_RUNNER="process",
                TRAINER_TRACKING_URI=tracking,
                RETRAIN_REFERENCE_ROWS=str(REFERENCE_ROWS),
                RETRAIN_CANDIDATES="random-forest",
                RETRAIN_MIN_ROWS="200",
                GATE_MIN_LABELLED_ROWS="50",
                ROLLOUT_TIMEOUT_S="120",
                SERVING_UPSTREAMS=format_upstreams({name: server.url for name, server in serving.items()}),
                WATCH_S="20",
                WATCH_POLL_S="0.5",
                WATCH_MIN_LABELLED="20",
                ORCHESTRATOR_REGISTRY_POLL_S="0.5",
            )
        )
        client = MlflowClient(tracking)
        runner = ProcessRunner(settings, ROOT / "trainer", env)
        coordinator = Coordinator(settings, client, runner, OrchestratorMetrics.create())
        coordinator.start_polling()
        yield Loop(client, coordinator, db, serving)
        coordinator.stopping.set()
    finally:
        procs.stop_all()
        for server in serving.values():
            server.close()


def serve_when_promoted(loop: Loop, model: str, before: str) -> str:
    """Play the serving launcher: once production moves off `before`, answer as the new version."""

    def moved() -> bool:
        state = loop.coordinator.status()[model]
        assert state["busy"], (
            f"the retraining ended without a promotion: {retraining_run(loop, model).data.tags}"
        )
        return str(loop.client.get_model_version_by_alias(model, PRODUCTION).version) != before

    wait_for(moved, 600, f"{model}@production to move off v{before}")
    version = str(loop.client.get_model_version_by_alias(model, PRODUCTION).version)
    loop.serving[model].version = version
    return version


def finished(loop: Loop, model: str) -> Callable[[], bool]:
    return lambda: loop.coordinator.status()[model]["busy"] is None


def retraining_run(loop: Loop, model: str) -> object:
    state = loop.coordinator.status()[model]
    return loop.client.get_run(state["run_id"])


def test_a_drift_alert_retrains_on_the_production_window_and_promotes(loop: Loop, tmp_path: Path) -> None:
    before = str(loop.client.get_model_version_by_alias(LATENCY.name, PRODUCTION).version)
    loop.serving[LATENCY.name].version = before
    drift_started = datetime.now(UTC) - timedelta(minutes=3)
    insert_predictions(loop.db, LATENCY.name, before, drifted_rows(800, 11, "latency_ms"), drift_started, 1.0)

    trigger = loop.coordinator.trigger(
        LATENCY.name, Trigger("alert:feature_drift_detected", since=drift_started)
    )
    assert trigger.result == "started"
    # While it runs, another alert is recorded on the run, not queued.
    assert loop.coordinator.trigger(LATENCY.name, Trigger("alert:live_rmse_degraded")).result == "busy"
    version = serve_when_promoted(loop, LATENCY.name, before)
    wait_for(finished(loop, LATENCY.name), 120, "the watch to end")

    run = retraining_run(loop, LATENCY.name)
    experiment = loop.client.get_experiment(run.info.experiment_id)
    assert experiment.name == RETRAINING_EXPERIMENT
    tags, params = run.data.tags, run.data.params
    assert tags["outcome"] == "promoted", tags.get("outcome.reason")
    assert tags["trigger"] == "alert:feature_drift_detected" and tags["triggers.coalesced"] == "1"
    assert tags["watch.outcome"] == "passed"
    assert tags["trainer.image_digest"].startswith("process:") and tags["trainer.exit_code"] == "0"
    assert tags["reproduce"].startswith("mlflow run trainer -e retrain")
    assert int(params["window.labelled_rows"]) == 800
    assert int(params["window.holdout_rows"]) == 240 and params["target"] == "latency_ms"
    # The data window is a dataset input with its digest, on the retraining run and the candidate.
    contexts = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs if i.tags}
    assert {"production-window", "gate-holdout", "training"} <= set(contexts)
    assert contexts["production-window"].digest
    logs = loop.client.download_artifacts(run.info.run_id, "logs/trainer.log", str(tmp_path))
    assert "latency-predictor v" in Path(logs).read_text()
    # The candidates are children of the retraining run, in its experiment (with team access on, the
    # orchestrator's login may write nowhere else).
    candidate = loop.client.get_run(loop.client.get_model_version(LATENCY.name, version).run_id)
    assert candidate.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert candidate.info.experiment_id == run.info.experiment_id

    new = loop.client.get_model_version(LATENCY.name, version)
    assert new.tags["promotion.decision"] == "promoted"
    assert new.tags["promotion.trigger"] == "alert:feature_drift_detected"
    assert new.tags["promotion.compared_with_version"] == before
    assert float(new.tags["promotion.candidate_window_rmse"]) < float(
        new.tags["promotion.production_window_rmse"]
    )
    assert int(new.tags["promotion.window_rows"]) == 240
    # The absolute bound: judged against the baseline the first production version recorded, which
    # this promotion did not move (trainer/gate.py).
    assert new.tags["promotion.refused_by"] == ""
    registered = loop.client.get_registered_model(LATENCY.name).tags
    assert registered[BASELINE_VERSION_TAG] == before
    assert new.tags["promotion.reference_baseline_rmse"] == registered[BASELINE_TAG]
    assert float(new.tags["promotion.candidate_reference_rmse"]) <= float(registered[BASELINE_TAG]) * 1.1
    candidate = loop.client.get_run(new.run_id)
    assert "production-window" in {i.tags[0].value for i in candidate.inputs.dataset_inputs if i.tags}
    # Its loss estimator learnt from the production holdout too (no candidate trains on it).
    with tempfile.TemporaryDirectory() as tmp:
        validation = loop.client.download_artifacts(candidate.info.run_id, "estimator/validation.json", tmp)
        figures = json.loads(Path(validation).read_text())
    assert figures["dle_fit_rows"] == int(candidate.data.params["n_val"]) + 240


def test_a_worse_candidate_keeps_production_and_says_why(loop: Loop) -> None:
    wait_for(finished(loop, LATENCY.name), 120, "the previous retraining")
    before = str(loop.client.get_model_version_by_alias(LATENCY.name, PRODUCTION).version)
    trigger = Trigger(
        "manual", "a linear model against the forest", automatic=False, candidates=("linear-regression",)
    )
    assert loop.coordinator.trigger(LATENCY.name, trigger).result == "started"
    wait_for(finished(loop, LATENCY.name), 600, "the retraining")
    run = retraining_run(loop, LATENCY.name)
    assert run.data.tags["outcome"] == "kept", run.data.tags.get("outcome.reason")
    assert str(loop.client.get_model_version_by_alias(LATENCY.name, PRODUCTION).version) == before
    kept = loop.client.get_model_version(LATENCY.name, run.data.tags["latency_ms.version"])
    assert kept.tags["promotion.decision"] == "not_promoted"
    assert "champion" in kept.tags["promotion.refused_by"].split(",")
    assert (
        "not better" in kept.tags["promotion.reason"]
        and "production-window RMSE" in kept.tags["promotion.reason"]
    )
    assert "Kept in staging" in kept.description


def test_a_window_with_too_few_labelled_rows_is_recorded_not_trained(loop: Loop) -> None:
    assert loop.coordinator.trigger(BANDWIDTH.name, Trigger("schedule")).result == "started"
    wait_for(finished(loop, BANDWIDTH.name), 120, "the retraining")
    run = retraining_run(loop, BANDWIDTH.name)
    assert run.data.tags["outcome"] == "skipped"
    assert "0 labelled rows, fewer than RETRAIN_MIN_ROWS=200" in run.data.tags["outcome.reason"]


def test_a_version_worse_on_live_traffic_is_rolled_back(loop: Loop) -> None:
    """Someone moves production by hand to the kept linear version; live RMSE is far worse than the
    forest's: the watch moves the alias back and records why on the version."""
    wait_for(finished(loop, LATENCY.name), 120, "the previous retraining")
    good = str(loop.client.get_model_version_by_alias(LATENCY.name, PRODUCTION).version)
    bad = str(max(int(v.version) for v in loop.client.search_model_versions(f"name='{LATENCY.name}'")))
    now = datetime.now(UTC)
    insert_predictions(
        loop.db, LATENCY.name, good, drifted_rows(100, 21, "latency_ms"), now - timedelta(seconds=60), 1.05
    )
    loop.client.set_registered_model_alias(LATENCY.name, PRODUCTION, bad)
    loop.serving[LATENCY.name].version = bad
    wait_for(lambda: loop.coordinator.status()[LATENCY.name]["busy"] == "watching", 30, "the watch to start")
    # Predicted a few seconds from now: surely after the watch began, however slow the machine.
    soon = datetime.now(UTC) + timedelta(seconds=3)
    insert_predictions(loop.db, LATENCY.name, bad, drifted_rows(100, 22, "latency_ms"), soon, 3.0)
    wait_for(finished(loop, LATENCY.name), 60, "the watch to end")
    assert str(loop.client.get_model_version_by_alias(LATENCY.name, PRODUCTION).version) == good
    rolled = loop.client.get_model_version(LATENCY.name, bad)
    assert rolled.tags["rollback.kind"] == "live_rmse" and rolled.tags["rollback.to_version"] == good
    assert "live RMSE" in rolled.tags["rollback.reason"]
    assert np.isclose(loop.coordinator.metrics.registry.get_sample_value(
        "orchestrator_rollbacks_total", {"model": LATENCY.name, "reason": "live_rmse"}), 1)  # fmt: skip


def test_make_rollback_moves_production_back_to_the_version_it_replaced(loop: Loop) -> None:
    """`make rollback`: production goes back to the version the current one replaced (the gate's
    champion), recorded as a manual rollback; with nothing recorded to go back to, it refuses."""
    wait_for(finished(loop, LATENCY.name), 120, "the previous watch")
    current = loop.client.get_model_version_by_alias(LATENCY.name, PRODUCTION)
    replaced = current.tags["promotion.compared_with_version"]
    answer = loop.coordinator.rollback(LATENCY.name, "by hand")
    assert answer == {"model": LATENCY.name, "from_version": str(current.version), "to_version": replaced}
    assert str(loop.client.get_model_version_by_alias(LATENCY.name, PRODUCTION).version) == replaced
    assert loop.client.get_model_version(LATENCY.name, str(current.version)).tags["rollback.kind"] == "manual"
    with pytest.raises(LookupError, match="records no version it replaced"):
        loop.coordinator.rollback(LATENCY.name, "again")  # v1 was the first: nothing before it


def test_a_new_orchestrator_ends_the_retrainings_an_interruption_left_running(loop: Loop) -> None:
    """What a restart mid-retraining (or a restore of a backup taken mid-retraining) leaves: the
    orchestrator's run RUNNING with a RUNNING candidate run under it. The next orchestrator's start
    ends both as KILLED with the reason; a finished retraining and runs it did not start (a
    participant's, in the experiment or elsewhere) stay as they were."""
    for model in loop.coordinator.states:
        wait_for(finished(loop, model), 120, f"the earlier tests' {model} retraining")
    client = loop.client
    experiment = client.get_experiment_by_name(RETRAINING_EXPERIMENT)
    assert experiment is not None  # the earlier tests retrained
    own = {"model": LATENCY.name, "trigger": "manual"}
    interrupted = client.create_run(experiment.experiment_id, run_name="retrain-interrupted", tags=own)
    candidate = client.create_run(
        experiment.experiment_id, run_name="rf-latency_ms",
        tags={"mlflow.parentRunId": interrupted.info.run_id},
    )  # fmt: skip
    done = client.create_run(experiment.experiment_id, run_name="retrain-done", tags=own)
    client.set_terminated(done.info.run_id, "FINISHED")
    stranger = client.create_run(experiment.experiment_id, run_name="not-ours", tags={"model": LATENCY.name})
    elsewhere = client.create_run(client.create_experiment("alice-interrupted"), run_name="alice", tags=own)
    time.sleep(0.01)  # runs created before the new process started

    restarted = Coordinator(
        loop.coordinator.settings, client, ProcessRunner(loop.coordinator.settings, ROOT / "trainer", {}),
        OrchestratorMetrics.create(),
    )  # fmt: skip
    try:
        restarted.start_polling()
        wait_for(
            lambda: client.get_run(interrupted.info.run_id).info.status == "KILLED", 60, "the interrupted run"
        )
        wait_for(lambda: client.get_run(candidate.info.run_id).info.status == "KILLED", 60, "its nested run")
    finally:
        restarted.stopping.set()
    for run in (interrupted, candidate):
        tags = client.get_run(run.info.run_id).data.tags
        assert tags[ENDED_BY_TAG] == INTERRUPTED == "orchestrator start: interrupted"
    assert client.get_run(interrupted.info.run_id).data.tags["outcome"] == "interrupted"
    assert client.get_run(done.info.run_id).info.status == "FINISHED"
    for run in (stranger, elsewhere):
        untouched = client.get_run(run.info.run_id)
        assert untouched.info.status == "RUNNING" and ENDED_BY_TAG not in untouched.data.tags
    assert ENDED_BY_TAG not in client.get_run(done.info.run_id).data.tags
    assert restarted.end_interrupted() == []  # nothing left: a second start changes nothing
