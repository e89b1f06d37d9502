"""The gateway's prediction log: its bounded buffer, and what it writes to a real PostgreSQL (the
session's throwaway cluster, tests/conftest.py)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest

from contracts.settings import libpq_uri
from services.gateway.metrics import GatewayMetrics
from services.gateway.predlog import Feedback, Prediction, PredictionLog, _jsonb
from tests.conftest import free_port


def prediction(request_id: str, **features: Any) -> Prediction:
    return Prediction(
        time.time(), request_id, "latency-predictor", "1", features or {"distance_km": 1.0}, 2.5, 1.0
    )


def value(metrics: GatewayMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


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


def test_without_postgres_the_buffer_is_bounded_and_requests_never_wait() -> None:
    metrics = GatewayMetrics()
    down = PredictionLog(f"postgresql://nobody@127.0.0.1:{free_port()}/x", metrics, 2, 0.05, buffer_max=5)
    down.start()
    try:
        started = time.perf_counter()
        results = [down.add(prediction(str(i))) for i in range(8)]
        assert time.perf_counter() - started < 0.05
        assert results == [True] * 5 + [False] * 3
        assert (
            value(metrics, "gateway_prediction_log_buffered"),
            value(metrics, "gateway_prediction_log_dropped_total"),
        ) == (5, 3)
    finally:
        down.stop(timeout=2)
    assert value(metrics, "gateway_prediction_log_written_total") == 0


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
    yield admin.rsplit("/", 1)[0] + "/predlog_unit"


def logged(dsn: str) -> dict[str, tuple[Any, ...]]:
    """request_id -> (features, prediction, actual); {} before the writer created the table."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT request_id, features, prediction, actual FROM predictions")
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
        # In one batch: the feedback comes after its prediction, a duplicate id is not an error.
        for item in (prediction("a"), prediction("b"), Feedback(time.time(), "a", 3.0), prediction("a")):
            log.add(item)
        rows = wait_for(lambda: len(r := logged(database)) == 2 and r, "2 logged predictions")
        assert rows["a"] == ({"distance_km": 1.0}, 2.5, 3.0) and rows["b"][2] is None
    finally:
        log.stop()
    assert value(metrics, "gateway_prediction_log_written_total") == 3  # rows sent, duplicates included
    assert value(metrics, "gateway_prediction_log_dropped_total") == 0


@pytest.mark.integration
def test_a_batch_postgres_refuses_is_dropped_and_counted_and_the_log_goes_on(database: str) -> None:
    metrics = GatewayMetrics()
    log = PredictionLog(database, metrics, batch_size=1, flush_s=0.05, buffer_max=1000)
    log.start()
    try:
        log.add(prediction("nul", note="a\x00b"))  # jsonb cannot hold \u0000: Postgres refuses the batch
        wait_for(lambda: value(metrics, "gateway_prediction_log_dropped_total") == 1, "the refused batch")
        log.add(prediction("after"))
        wait_for(lambda: "after" in logged(database), "the next batch")
    finally:
        log.stop()
    assert "nul" not in logged(database)
