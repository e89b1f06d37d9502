"""The monitor's drift and live quality, computed in-process from a real Postgres prediction log.

Rows go in with the gateway's own statements (contracts.predlog.INSERT / FEEDBACK_INSERT); the
reference profiles sit in a real registry (an SQLite store, no server needed). What the monitor
exports is checked against the shared maths (contracts.drift.drift_report) and numpy, computed
directly on the same rows.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import psycopg2
import pytest
from mlflow.tracking import MlflowClient
from psycopg2 import sql
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from contracts import database as names
from contracts import dle, drift, predlog, synthetic
from contracts.predlog_migrations import apply_schema
from contracts.schema import FEATURE_NAMES
from services.local import Processes, postgres_bindir, start_postgres
from services.monitor import Settings
from services.monitor import windows as windows_module
from services.monitor.metrics import MonitorMetrics
from services.monitor.windows import WindowMonitor
from tests.conftest import ROOT, free_port, fresh_database, python_env, require
from tests.monitor_support import Log, Row, cursor, feature_rows, reference_profile
from trainer import data
from trainer.features import build_preprocessor
from trainer.train import log_loss_estimator

pytestmark = pytest.mark.integration

MODEL = "latency-predictor"
DATABASE = "monitor_windows"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """MODEL v1 and v2 with reference profiles (different training data), v3 without one; v4 a
    linear model whose run carries the loss estimator the trainer logs (trainer.train)."""
    base = tmp_path_factory.mktemp("monitor-windows-registry")
    store = f"sqlite:///{base / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    experiment = client.create_experiment("monitor-windows", artifact_location=(base / "artifacts").as_uri())
    client.create_registered_model(MODEL)
    profiles = {"1": reference_profile(1), "2": reference_profile(2), "4": reference_profile(4)}
    for version in ("1", "2", "3"):
        run = client.create_run(experiment)
        if version in profiles:
            client.log_dict(run.info.run_id, profiles[version], drift.PROFILE_ARTIFACT)
        made = client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        assert str(made.version) == version
    train, val, test = data.split(synthetic.generate(3000, seed=4), seed=4)
    model = Pipeline([("preprocess", build_preprocessor()), ("model", LinearRegression())])
    model.fit(train[list(FEATURE_NAMES)], train["latency_ms"])
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store)
    try:
        with mlflow.start_run(experiment_id=experiment) as run:
            client.log_dict(run.info.run_id, profiles["4"], drift.PROFILE_ARTIFACT)
            figures = log_loss_estimator(model, "latency_ms", val, test, seed=4)
    finally:
        mlflow.set_tracking_uri(previous)
    made = client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    assert str(made.version) == "4"
    return {"client": client, "store": store, "profiles": profiles, "model": model, "figures": figures,
            "estimator_run": run.info.run_id}  # fmt: skip


@pytest.fixture(scope="module")
def log_uri(postgres_uri: str) -> str:
    uri = fresh_database(postgres_uri, DATABASE)
    apply_schema(uri)
    return uri


def maintenance_uri(uri: str) -> str:
    """The cluster's maintenance database (the log's own refuses connections during the outage)."""
    return uri.rsplit("/", 1)[0] + "/postgres"


@pytest.fixture
def log(log_uri: str) -> str:
    """An empty prediction log for each test."""
    with cursor(log_uri) as cur:
        cur.execute("TRUNCATE predictions, feedback")
    return log_uri


def make_monitor(uri: str, registry: dict[str, Any], **settings: Any) -> WindowMonitor:
    values = {"MLFLOW_TRACKING_URI": registry["store"], "MONITORING_DB_URI": uri, "DRIFT_MIN_ROWS": 100,
              **settings}  # fmt: skip
    return WindowMonitor(Settings.from_env(values), registry["client"], MonitorMetrics.create(), [MODEL])


def gauge(monitor: WindowMonitor, name: str, **labels: str) -> float | None:
    """A series of MODEL (gateway_*, mlops_estimated_*) or of the monitor itself (mlops_monitor_*)."""
    model = {"model": MODEL} if name.startswith(("gateway_", "mlops_estimated_")) else {}
    return monitor.metrics.registry.get_sample_value(name, {**model, **labels})


def drift_series(monitor: WindowMonitor) -> dict[tuple[str, str], float]:
    """Every drift series of MODEL: (name, feature or '') -> value."""
    found = {}
    for family in monitor.metrics.registry.collect():
        for sample in family.samples:
            name = sample.name
            if name.startswith("gateway_") and "drift" in name and "window" not in name:
                assert sample.labels["model"] == MODEL
                found[(name, sample.labels.get("feature", ""))] = sample.value
    return found


def expected_series(report: drift.DriftReport, dataset_share: float = 0.3) -> dict[tuple[str, str], float]:
    expected = {("gateway_feature_drift_psi", f): v for f, v in report.psi.items()}
    expected |= {("gateway_feature_drift_ks", f): v for f, v in report.ks.items()}
    assert report.prediction_psi is not None
    expected[("gateway_prediction_drift_psi", "")] = report.prediction_psi
    expected[("gateway_drifted_features_ratio", "")] = report.drifted_share
    expected[("gateway_dataset_drift", "")] = 1.0 if report.drifted_share > dataset_share else 0.0
    return expected


def report_of(profile: dict[str, Any], rows: list[Row], predictions: list[float]) -> drift.DriftReport:
    columns = {name: [row[name] for row in rows] for name in FEATURE_NAMES}
    return drift.drift_report(profile, columns, predictions, 0.2)


def assert_series(found: dict[tuple[str, str], float], expected: dict[tuple[str, str], float]) -> None:
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_drift_of_both_replicas_newest_rows_equals_the_shared_maths(
    log: str, registry: dict[str, Any]
) -> None:
    writer = Log(log, time.time() - 60)
    old, new = feature_rows(100, seed=3), feature_rows(240, seed=4, shift=1.0)
    writer.predict("1", old, [10.0] * 100)
    predictions = [float(p) for p in np.linspace(5, 400, 240)]
    # Two replicas, interleaved: every second request went to the other one.
    for i, (row, prediction) in enumerate(zip(new, predictions, strict=True)):
        writer.predict("1", [row], [prediction], replica="ab"[i % 2])
    monitor = make_monitor(log, registry, DRIFT_WINDOW=200)

    assert monitor.compute() is True

    expected = report_of(registry["profiles"]["1"], new[-200:], predictions[-200:])
    assert_series(drift_series(monitor), expected_series(expected))
    assert gauge(monitor, "gateway_drift_window_size") == 200
    assert gauge(monitor, "gateway_dataset_drift") == 1.0  # shift 1.0 is strong drift
    assert (gauge(monitor, "mlops_monitor_last_window_timestamp_seconds") or 0) > time.time() - 30
    assert gauge(monitor, "mlops_monitor_window_duration_seconds") is not None


def test_one_request_counts_at_most_its_cap_and_old_rows_not_at_all(
    log: str, registry: dict[str, Any]
) -> None:
    writer = Log(log, time.time() - 60)
    writer.predict("1", feature_rows(150, seed=5), [1.0] * 150, ts=time.time() - 7200)  # too old
    writer.predict("1", feature_rows(100, seed=6), [1.0] * 100, batch=True)  # one request
    writer.predict("1", feature_rows(90, seed=7), [1.0] * 90)  # one row each
    monitor = make_monitor(log, registry, DRIFT_MAX_ROWS_PER_REQUEST=5, DRIFT_MAX_AGE_S=3600)

    assert monitor.compute() is True

    assert gauge(monitor, "gateway_drift_window_size") == 95  # 5 of the batch, 90 singles
    assert drift_series(monitor) == {}, "95 rows are fewer than DRIFT_MIN_ROWS: not scored, absent"
    writer.predict("1", feature_rows(10, seed=8), [1.0] * 10)
    assert monitor.compute() is True
    assert gauge(monitor, "gateway_drift_window_size") == 105
    assert gauge(monitor, "gateway_drifted_features_ratio") is not None


def test_live_quality_of_both_replicas_equals_numpy(log: str, registry: dict[str, Any]) -> None:
    writer = Log(log, time.time() - 60)
    rng = np.random.default_rng(0)
    predictions = [float(v) for v in rng.uniform(10, 200, 120)]
    actual = [p + float(e) for p, e in zip(predictions, rng.normal(0, 15, 120), strict=True)]
    pairs = enumerate(zip(feature_rows(120, seed=9), predictions, strict=True))
    ids = [writer.predict("1", [row], [p], replica="ab"[i % 2])[0] for i, (row, p) in pairs]
    writer.predict("1", [{"a": 1}], [999.0])  # no feedback: not a pair
    writer.feedback(list(zip(ids, actual, strict=True)))
    monitor = make_monitor(log, registry, FEEDBACK_WINDOW=100)

    assert monitor.compute() is True

    p, y = np.array(predictions[-100:]), np.array(actual[-100:])  # the newest 100 feedback values
    assert gauge(monitor, "gateway_live_mae") == pytest.approx(np.mean(np.abs(y - p)))
    assert gauge(monitor, "gateway_live_rmse") == pytest.approx(np.sqrt(np.mean((y - p) ** 2)))
    r2 = 1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2)
    assert gauge(monitor, "gateway_live_r2") == pytest.approx(r2)


def test_a_new_version_starts_over_with_its_own_rows_and_profile(
    log: str, registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []
    real_load = windows_module.load_profile

    def counted(client: MlflowClient, run_id: str) -> dict[str, Any] | None:
        loads.append(run_id)
        return real_load(client, run_id)

    monkeypatch.setattr(windows_module, "load_profile", counted)
    writer = Log(log, time.time() - 60)
    ids = writer.predict("1", feature_rows(150, seed=10, shift=1.0), [50.0] * 150)
    writer.feedback([(rid, 60.0 + i % 7) for i, rid in enumerate(ids)])
    monitor = make_monitor(log, registry)
    assert monitor.compute() is True
    assert gauge(monitor, "gateway_dataset_drift") == 1.0
    assert gauge(monitor, "gateway_live_rmse") is not None
    assert monitor.compute() is True
    assert len(loads) == 1, "a version's profile is read from the registry once"

    # v2 answers now (a rollout): the window holds v2's rows only, too few yet; no feedback for v2.
    v2_rows = feature_rows(60, seed=11)
    writer.predict("2", v2_rows[:30], [20.0] * 30)
    assert monitor.compute() is True
    assert gauge(monitor, "gateway_drift_window_size") == 30
    assert drift_series(monitor) == {}, "the old version's drift must disappear, not stay"
    assert gauge(monitor, "gateway_live_rmse") is None, "v1's live quality is not v2's"

    writer.predict("2", v2_rows[30:] + feature_rows(60, seed=12), [20.0] * 90)
    assert monitor.compute() is True
    all_v2 = v2_rows + feature_rows(60, seed=12)
    assert_series(
        drift_series(monitor), expected_series(report_of(registry["profiles"]["2"], all_v2, [20.0] * 120))
    )
    assert gauge(monitor, "gateway_drift_window_size") == 120
    assert len(loads) == 2

    # Mid-rollout both versions answer: each switch starts over, no profile is read again.
    writer.predict("1", feature_rows(1, seed=20, shift=1.0), [50.0])
    assert monitor.compute() is True
    assert (gauge(monitor, "gateway_drift_window_size"), gauge(monitor, "gateway_dataset_drift")) == (
        151,
        1.0,
    )
    writer.predict("2", feature_rows(1, seed=21), [20.0])
    assert monitor.compute() is True
    assert gauge(monitor, "gateway_drift_window_size") == 121
    assert len(loads) == 2

    # v3 has no reference profile: no drift series at all, live quality still works.
    v3 = writer.predict("3", feature_rows(120, seed=13), [5.0] * 120)
    writer.feedback([(rid, 6.0) for rid in v3])
    assert monitor.compute() is True
    assert drift_series(monitor) == {}
    assert gauge(monitor, "gateway_drift_window_size") == 0
    assert len(loads) == 3
    assert gauge(monitor, "gateway_live_mae") == pytest.approx(1.0)
    assert gauge(monitor, "gateway_live_r2") is None, "R2 is undefined while the actual values are constant"


def test_estimated_quality_of_a_version_with_a_loss_estimator_needs_no_feedback(
    log: str, registry: dict[str, Any]
) -> None:
    """v4's run carries the estimator the trainer logged: from the first prediction on, with no
    feedback at all, the monitor exports its estimated MAE/RMSE over the drift window's usable rows
    and how many rows they cover. v1 has no estimator: no estimated series."""
    writer = Log(log, time.time() - 60)
    writer.predict("1", feature_rows(5, seed=30), [10.0] * 5)
    monitor = make_monitor(log, registry, DRIFT_WINDOW=200)
    assert monitor.compute() is True
    assert gauge(monitor, "mlops_estimated_rmse") is None, "v1 has no loss estimator"

    model: Pipeline = registry["model"]
    first = feature_rows(1, seed=31)
    writer.predict("4", first, [float(v) for v in model.predict(pd.DataFrame(first))])
    assert monitor.compute() is True
    assert gauge(monitor, "mlops_estimated_rows") == 1, "estimated from the first prediction"
    assert gauge(monitor, "gateway_live_rmse") is None, "no feedback yet"

    rows = feature_rows(300, seed=32, shift=0.5)
    predictions = [float(v) for v in model.predict(pd.DataFrame(rows))]
    writer.predict("4", rows, predictions)
    writer.predict("4", [{"a": 1}], [5.0])  # not estimable: skipped
    assert monitor.compute() is True

    estimator = dle.load(registry["client"], registry["estimator_run"])
    assert estimator is not None
    expected = estimator.estimate(rows[-199:], predictions[-199:])  # the window: 199 of these, 1 bad
    assert gauge(monitor, "mlops_estimated_rows") == 199
    assert gauge(monitor, "mlops_estimated_mae") == pytest.approx(expected.mae, rel=1e-9)
    assert gauge(monitor, "mlops_estimated_rmse") == pytest.approx(expected.rmse, rel=1e-9)
    reference = registry["figures"]["dle_val_estimated_rmse"]
    assert expected.rmse > 1.2 * reference, "a drifted window raises the linear model's estimated RMSE"

    writer.predict("1", feature_rows(1, seed=33), [10.0])  # v1 answers again: v4's estimate goes
    assert monitor.compute() is True
    assert gauge(monitor, "mlops_estimated_rmse") is None and gauge(monitor, "mlops_estimated_rows") is None


def test_bad_rows_are_skipped(log: str, registry: dict[str, Any]) -> None:
    writer = Log(log, time.time() - 60)
    good = feature_rows(120, seed=14)
    missing = {k: v for k, v in good[0].items() if k != FEATURE_NAMES[0]}
    text_number = {**good[1], FEATURE_NAMES[0]: "fast"}
    writer.predict("1", good, [30.0] * 120)
    writer.predict("1", [[1, 2, 3], "a string", 42, missing, text_number], [30.0, None, 30.0, 30.0, 30.0])
    monitor = make_monitor(log, registry)

    assert monitor.compute() is True

    assert gauge(monitor, "gateway_drift_window_size") == 120
    assert_series(
        drift_series(monitor), expected_series(report_of(registry["profiles"]["1"], good, [30.0] * 120))
    )


def test_a_database_outage_keeps_the_last_values_and_counts_it(log: str, registry: dict[str, Any]) -> None:
    writer = Log(log, time.time() - 60)
    ids = writer.predict("1", feature_rows(120, seed=15), [40.0] * 120)
    writer.feedback([(rid, 44.0 + i % 3) for i, rid in enumerate(ids)])
    monitor = make_monitor(log, registry)
    assert monitor.compute() is True
    before = drift_series(monitor)
    rmse = gauge(monitor, "gateway_live_rmse")
    last = gauge(monitor, "mlops_monitor_last_window_timestamp_seconds")
    assert before and rmse is not None

    with cursor(maintenance_uri(log)) as cur:  # the database goes away under the monitor's connection
        cur.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(DATABASE)))
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'monitor'"
        )
    try:
        assert monitor.compute() is False
        assert monitor.compute() is False  # and again: a new connection is refused
        assert gauge(monitor, "mlops_monitor_window_errors_total") == 2
        assert drift_series(monitor) == before
        assert gauge(monitor, "gateway_live_rmse") == rmse
        assert gauge(monitor, "mlops_monitor_last_window_timestamp_seconds") == last
    finally:
        with cursor(maintenance_uri(log)) as cur:
            cur.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(DATABASE)))
    assert monitor.compute() is True, "the next interval works again"
    assert (gauge(monitor, "mlops_monitor_last_window_timestamp_seconds") or 0) > (last or 0)


# --- The monitor's own role, after the create-databases job's grants. ---------------------------


def test_the_monitor_role_runs_its_queries_and_writes_nothing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A cluster of its own (the job hands databases over and revokes CONNECT): services.dbinit as in
    the stack, then the monitor's role reads the log and is refused every write."""
    require("PostgreSQL server (Debian package postgresql)", postgres_bindir())
    base = tmp_path_factory.mktemp("monitor-role")
    procs = Processes(log_dir=base / "logs")
    port = free_port()
    try:
        admin = start_postgres(procs, base / "pg", port)
        passwords = {f"POSTGRES_{role.upper()}_PASSWORD": f"{role}-password-123" for role in
                     ("mlflow", "gateway", "monitor", "orchestrator", "grafana")}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "services.dbinit"],
            env={**python_env(), **passwords, "POSTGRES_ADMIN_URI": admin, "DBINIT_ATTEMPTS": "2"},
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        as_gateway = f"postgresql://{names.GATEWAY_ROLE}@127.0.0.1:{port}/{names.MONITORING_DATABASE}"
        writer = Log(as_gateway, time.time() - 60)
        ids = writer.predict("1", feature_rows(3, seed=16), [1.0, 2.0, 3.0])
        writer.feedback([(ids[0], 1.5)])

        as_monitor = f"postgresql://{names.MONITOR_ROLE}@127.0.0.1:{port}/{names.MONITORING_DATABASE}"
        with cursor(as_monitor) as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == (names.MONITOR_ROLE,)
            assert predlog.served_version(cur, MODEL) == "1"
            since = datetime.now(UTC) - timedelta(hours=1)
            assert len(predlog.drift_window(cur, MODEL, "1", 10, 5, since)) == 3
            assert predlog.live_quality(cur, MODEL, "1", 10, since).pairs == 1
            for statement in (
                "INSERT INTO predictions (ts, request_id, model, version, features) "
                "VALUES (now(), 'x', 'm', '1', '{}')",
                "INSERT INTO feedback (request_id, model, actual, ts) VALUES ('x', 'm', 1, now())",
                "UPDATE predictions SET version = '9'",
                "DELETE FROM feedback",
                "TRUNCATE predictions",
                "CREATE TABLE spare (x int)",
                "DROP VIEW labelled",
            ):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(statement)
    finally:
        procs.stop_all()
