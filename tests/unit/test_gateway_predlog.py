"""The gateway's prediction log: admission, the on-disk spool, and what it writes to a real
PostgreSQL (the session's throwaway cluster, tests/conftest.py, and one that a test stops and
starts)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from contracts.predlog_migrations import apply_schema
from contracts.settings import libpq_uri
from services.gateway.metrics import GatewayMetrics
from services.gateway.predlog import Feedback, Prediction, PredictionLog, _jsonb, decode
from tests.conftest import free_port
from tests.gateway_support import Postgres


def prediction(request_id: str, **features: Any) -> Prediction:
    return Prediction(
        time.time(), request_id, "latency-predictor", "1", features or {"distance_km": 1.0}, 2.5, 1.0
    )


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def test_features_that_json_cannot_carry_are_replaced_not_lost() -> None:
    assert json.loads(_jsonb({"a": 1.5, "b": "x"})) == {"a": 1.5, "b": "x"}
    assert json.loads(_jsonb({"a": math.nan}))["unencodable"].startswith("{'a': nan")
    assert "unencodable" in json.loads(_jsonb({"a": object()}))


def test_without_postgres_or_spool_requests_are_pushed_back_never_dropped() -> None:
    metrics = GatewayMetrics()
    down = PredictionLog(f"postgresql://nobody@127.0.0.1:{free_port()}/x", metrics, 2, 0.05, buffer_max=5)
    down.start()
    try:
        started = time.perf_counter()
        answers = [down.refusal(2) for _ in range(3)]  # 2 + 2 fit, the third request does not
        assert time.perf_counter() - started < 0.05
        assert answers[:2] == [None, None] and "LOG_BUFFER_MAX" in str(answers[2])
        down.add([prediction("a"), prediction("b")], reserved=2)
        down.release(2)  # the second request failed upstream: its room comes back
        assert down.refusal(3) is None and down.refusal(1) is not None
        assert value(metrics, "gateway_prediction_log_buffered") == 2
    finally:
        down.stop(timeout=2)
    assert value(metrics, "gateway_requests_pushed_back_total", reason="memory_full") == 2
    assert value(metrics, "gateway_prediction_log_dropped_total") == 0
    assert value(metrics, "gateway_prediction_log_written_total") == 0


def test_without_postgres_records_go_to_the_spool_until_it_is_full(tmp_path: Path) -> None:
    metrics = GatewayMetrics()
    down = PredictionLog(
        f"postgresql://nobody@127.0.0.1:{free_port()}/x", metrics, 10, 0.05, buffer_max=100,
        spool_dir=str(tmp_path), spool_max_bytes=20_000,
    )  # fmt: skip
    down.start()
    try:
        sent = 0
        while down.refusal(10) is None:
            down.add([prediction(f"r{sent + i}") for i in range(10)], reserved=10)
            sent += 10
            wait_for(lambda: value(metrics, "gateway_prediction_log_buffered") == 0, "records spooled")
            assert sent < 1000, "the spool never filled"
        assert value(metrics, "gateway_prediction_log_spool_rows") == sent
        assert value(metrics, "gateway_prediction_log_spool_bytes") >= 20_000  # type: ignore[operator]
        assert value(metrics, "gateway_requests_pushed_back_total", reason="spool_full") == 1
    finally:
        down.stop(timeout=2)
    lines = b"".join(f.read_bytes() for f in sorted(tmp_path.glob("*/*.jsonl"))).splitlines()
    assert [decode(line).request_id for line in lines] == [f"r{i}" for i in range(sent)]
    assert value(metrics, "gateway_prediction_log_dropped_total") == 0


@pytest.fixture(scope="module")
def database(postgres_uri: str) -> Iterator[str]:
    """A `predlog_unit` database in the session's cluster (its psycopg2 DSN)."""
    admin = libpq_uri(postgres_uri)
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS predlog_unit")
        cur.execute("CREATE DATABASE predlog_unit")
    conn.close()
    dsn = admin.rsplit("/", 1)[0] + "/predlog_unit"
    apply_schema(dsn)  # as the create-databases job does: the gateway runs no DDL
    yield dsn


def logged(dsn: str) -> dict[str, tuple[Any, ...]]:
    """request_id -> (features, prediction, actual); {} before the writer created the table."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT p.request_id, p.features, p.prediction, f.actual FROM predictions AS p "
                "LEFT JOIN feedback AS f ON f.request_id = p.request_id"
            )
            return {row[0]: row[1:] for row in cur.fetchall()}
    except psycopg2.errors.UndefinedTable:
        return {}
    finally:
        conn.close()


@pytest.mark.integration
def test_writes_predictions_then_their_feedback_in_order(database: str) -> None:
    metrics = GatewayMetrics()
    log = PredictionLog(database, metrics, batch_size=100, flush_s=0.05, buffer_max=1000)
    log.start()
    try:
        # In one batch: the feedback comes after its prediction, a duplicate id is not an error, and
        # a second value for the same prediction changes nothing (the first wins).
        log.add([prediction("a"), prediction("b"), Feedback(time.time(), "a", 3.0), prediction("a")], 0)
        log.add([Feedback(time.time(), "a", 9.0)], 0)
        rows = wait_for(lambda: len(r := logged(database)) == 2 and r, "2 logged predictions")
        assert rows["a"] == ({"distance_km": 1.0}, 2.5, 3.0) and rows["b"][2] is None
    finally:
        log.stop()
    assert logged(database)["a"][2] == 3.0
    assert value(metrics, "gateway_prediction_log_written_total") == 3  # rows sent, duplicates included
    assert value(metrics, "gateway_prediction_log_dropped_total") == 0


@pytest.mark.integration
def test_a_record_postgres_refuses_is_kept_with_a_marker_and_the_log_goes_on(database: str) -> None:
    metrics = GatewayMetrics()
    log = PredictionLog(database, metrics, batch_size=10, flush_s=0.05, buffer_max=1000)
    log.start()
    try:
        # jsonb cannot hold \u0000: Postgres refuses the batch, then that row; its neighbours stay.
        log.add([prediction("before"), prediction("nul", note="a\x00b"), prediction("after")], 3)
        wait_for(lambda: {"before", "nul", "after"} <= set(logged(database)), "the three records")
    finally:
        log.stop()
    assert "unstorable" in logged(database)["nul"][0]
    assert value(metrics, "gateway_prediction_log_dropped_total") == 0


@pytest.mark.integration
def test_a_missing_table_keeps_the_records_until_the_schema_is_applied(
    postgres_uri: str, tmp_path: Path
) -> None:
    """The gateway runs no DDL: without the table (the create-databases job not run) the records are
    spooled and retried, never dropped as refused values."""
    admin = libpq_uri(postgres_uri)
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS predlog_no_schema")
        cur.execute("CREATE DATABASE predlog_no_schema")
    conn.close()
    dsn = admin.rsplit("/", 1)[0] + "/predlog_no_schema"
    metrics = GatewayMetrics()
    log = PredictionLog(dsn, metrics, batch_size=10, flush_s=0.05, buffer_max=100, spool_dir=str(tmp_path))
    log.start()
    try:
        log.add([prediction("early-1"), prediction("early-2")], 0)
        wait_for(lambda: log.spool is not None and log.spool.rows == 2, "2 spooled")
        apply_schema(dsn)
        wait_for(lambda: {"early-1", "early-2"} <= set(logged(dsn)), "the kept records", timeout=60)
    finally:
        log.stop()
    assert value(metrics, "gateway_prediction_log_dropped_total") == 0


@pytest.fixture(scope="module")
def stoppable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A PostgreSQL cluster of its own, so that a test can stop and start it."""
    postgres = Postgres(tmp_path_factory.mktemp("stoppable"))
    try:
        apply_schema(postgres.dsn)  # as the create-databases job does: the gateway runs no DDL
        yield postgres
    finally:
        postgres.procs.stop_all()


@pytest.mark.integration
def test_postgres_down_then_up_every_record_arrives_in_order(stoppable: Postgres, tmp_path: Path) -> None:
    metrics = GatewayMetrics()
    log = PredictionLog(
        stoppable.dsn, metrics, batch_size=50, flush_s=0.05, buffer_max=500, spool_dir=str(tmp_path),
        spool_segment_bytes=4096,  # many segments: each is deleted once written
    )  # fmt: skip
    log.start()
    try:
        log.add([prediction("first")], 0)
        wait_for(lambda: "first" in logged(stoppable.dsn), "the first record")
        stoppable.stop()
        ids = [f"down-{i}" for i in range(2000)]
        for chunk in range(0, len(ids), 100):  # refused while 500 wait in memory, like a client's retry
            wait_for(lambda: log.refusal(100) is None, "room in the prediction log")
            log.add([prediction(i) for i in ids[chunk : chunk + 100]], 100)
        log.add([Feedback(time.time(), "down-7", 42.0)], 0)  # after its insert, in the spool too
        wait_for(lambda: value(metrics, "gateway_prediction_log_spool_rows") == 2001, "2001 spooled")
        assert len(list(tmp_path.glob("*/*.jsonl"))) > 1
        stoppable.start()
        wait_for(lambda: value(metrics, "gateway_prediction_log_spool_rows") == 0, "the spool replayed", 60)
    finally:
        log.stop()
    rows = logged(stoppable.dsn)
    assert set(ids) <= set(rows) and rows["down-7"][2] == 42.0
    assert list(tmp_path.glob("*/*.jsonl")) == []
    assert value(metrics, "gateway_prediction_log_dropped_total") == 0


@pytest.mark.integration
def test_records_left_by_a_stopped_process_are_replayed_by_the_next(
    stoppable: Postgres, tmp_path: Path
) -> None:
    stoppable.start()
    stoppable.stop()
    first = PredictionLog(stoppable.dsn, GatewayMetrics(), 10, 0.05, 100, spool_dir=str(tmp_path))
    first.start()
    first.add([prediction("left-1"), prediction("left-2")], 0)
    wait_for(lambda: first.spool is not None and first.spool.rows == 2, "2 spooled")
    first.stop(timeout=5)  # Postgres down: they stay on disk
    assert len(list(tmp_path.glob("*/*.jsonl"))) == 1
    stoppable.start()
    second = PredictionLog(stoppable.dsn, GatewayMetrics(), 10, 0.05, 100, spool_dir=str(tmp_path))
    second.start()
    try:
        wait_for(lambda: {"left-1", "left-2"} <= set(logged(stoppable.dsn)), "the adopted records")
    finally:
        second.stop()
    assert list(tmp_path.glob("*/*.jsonl")) == []
