"""Feedback matched in the prediction log, across replicas: two gateway apps in-process (Starlette's
TestClient) on one real PostgreSQL log, in front of a real model server on loopback and a real
MLflow registry. Neither replica remembers anything the other would need."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest

from contracts.predlog_migrations import apply_schema
from contracts.settings import libpq_uri
from tests.conftest import free_port, fresh_database
from tests.gateway_support import (
    Gateway,
    ScoringServer,
    make_registry,
    records,
    running,
    scoring_server,
    tracking_uri_restored,
)

LATENCY, BANDWIDTH = "latency-predictor", "bandwidth-efficiency-predictor"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with tracking_uri_restored():
        yield make_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScoringServer]:
    yield from scoring_server()


@pytest.fixture(scope="module")
def log_uri(postgres_uri: str) -> str:
    uri = fresh_database(postgres_uri, "gateway_feedback")
    apply_schema(uri)
    return uri


@pytest.fixture(scope="module")
def replicas(registry: str, upstream: ScoringServer, log_uri: str) -> Iterator[tuple[Gateway, Gateway]]:
    """Two replicas on the same log; each writes it every 2 s (LOG_FLUSH_S), so feedback taken by
    one for a prediction the other just answered has to wait for the other's write."""
    models = {LATENCY: upstream.url, BANDWIDTH: upstream.url}
    env = {"MONITORING_DB_URI": log_uri, "LOG_FLUSH_S": "2", "GATEWAY_FEEDBACK_WAIT_S": "5"}
    with (
        running(registry, models, [LATENCY, BANDWIDTH], **env) as a,
        running(registry, models, [LATENCY, BANDWIDTH], **env) as b,
    ):
        yield a, b


def feedback_rows(log_uri: str, ids: list[str]) -> dict[str, tuple[str, float]]:
    """request_id -> (model, actual) of the feedback the log holds for `ids`."""
    with psycopg2.connect(libpq_uri(log_uri)) as conn, conn.cursor() as cur:
        cur.execute("SELECT request_id, model, actual FROM feedback WHERE request_id = ANY(%s)", (ids,))
        found = {rid: (model, actual) for rid, model, actual in cur.fetchall()}
    conn.close()
    return found


def post_feedback(
    gateway: Gateway, ids: list[str], actual: float = 1.0, model: str = LATENCY
) -> dict[str, Any]:
    answer = gateway.post("feedback", {"feedback": [{"request_id": i, "actual": actual} for i in ids]}, model)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_feedback_taken_by_the_other_replica_is_matched(
    replicas: tuple[Gateway, Gateway], log_uri: str
) -> None:
    a, b = replicas
    ids = a.post("predict", {"records": records(5, seed=1)}).json()["request_ids"]
    assert post_feedback(b, ids, 7.5) == {"accepted": 5, "unknown": []}
    assert b.metric("gateway_feedback_total", model=LATENCY) >= 5
    # Invocations' rows are `<X-Request-ID>-<row>`, answered by b, fed back through a.
    answer = b.post("invocations", {"dataframe_records": records(2, seed=2)}, model=BANDWIDTH)
    rows = [f"{answer.headers['x-request-id']}-{i}" for i in range(2)]
    assert post_feedback(a, rows, 0.5, BANDWIDTH) == {"accepted": 2, "unknown": []}

    def written() -> bool:
        return len(feedback_rows(log_uri, ids + rows)) == 7

    wait_for(written, "the matched feedback in the log")
    stored = feedback_rows(log_uri, ids + rows)
    assert {stored[i] for i in ids} == {(LATENCY, 7.5)} and {stored[r] for r in rows} == {(BANDWIDTH, 0.5)}


def test_unknown_ids_another_model_and_repeats_are_answered_unknown(
    replicas: tuple[Gateway, Gateway],
) -> None:
    a, b = replicas
    ids = a.post("predict", {"records": records(2, seed=3)}).json()["request_ids"]
    # Another model's id is not this model's prediction; a made-up id is nobody's.
    wrong_model = post_feedback(b, ids[:1], model=BANDWIDTH)
    assert wrong_model == {"accepted": 0, "unknown": ids[:1]}
    first = post_feedback(b, [ids[0], ids[0], "no-such-id", "nul\x00"])
    # A repeat in one post is unknown too; so is an id Postgres could not even hold (never issued).
    assert first == {"accepted": 1, "unknown": [ids[0], "no-such-id", "nul\x00"]}
    wait_for(lambda: post_feedback(a, [ids[0]])["unknown"] == [ids[0]], "the first value to be stored")
    assert post_feedback(a, [ids[1]]) == {"accepted": 1, "unknown": []}


def test_without_a_readable_log_feedback_gets_503_and_nothing_is_kept(
    registry: str, upstream: ScoringServer
) -> None:
    unreachable = f"postgresql://nobody@127.0.0.1:{free_port()}/monitoring"
    with running(registry, {LATENCY: upstream.url}, [LATENCY], MONITORING_DB_URI=unreachable) as alone:
        answer = alone.post("feedback", {"feedback": [{"request_id": "x", "actual": 1.0}]})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
        assert "cannot be read" in answer.json()["message"] and "Traceback" not in answer.text
        assert alone.app.scoring.prediction_log is not None
        assert alone.app.scoring.prediction_log._reserved == 0  # the admission was given back
    with running(registry, {LATENCY: upstream.url}, [LATENCY]) as no_log:
        answer = no_log.post("feedback", {"feedback": [{"request_id": "x", "actual": 1.0}]})
        assert answer.status_code == 503 and "MONITORING_DB_URI" in answer.json()["message"]


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
