"""The gateway's ASGI app driven in-process (Starlette's TestClient), in front of a real model server
on loopback that speaks MLflow's scoring protocol and a real MLflow registry (SQLite store).

Covers the request path (scoring.py): every row of issue 8's input table, the error shape, the
limits, the MLflow protocol's forms, upstream failures, feedback, the OpenAPI description, and the
guard that keeps FastAPI's declared scoring routes from being silently bypassed.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.middleware.gzip import GZipMiddleware
from starlette.testclient import TestClient

from contracts.errors import ErrorBody, install_error_handlers
from contracts.predlog_migrations import apply_schema
from contracts.schema import FEATURE_NAMES
from services.gateway import Settings
from services.gateway.app import create_app
from services.gateway.auth import ApiKeys
from services.gateway.routes import models
from services.gateway.routes import status as status_routes
from services.gateway.routes.deps import get_api_keys, get_gateway
from services.gateway.state import Gateway as GatewayState
from services.gateway.validation import record_json_schema
from tests.conftest import free_port, fresh_database
from tests.gateway_support import (
    Gateway,
    ScoringServer,
    formula,
    make_registry,
    records,
    running,
    scoring_server,
    tracking_uri_restored,
)

LATENCY, BANDWIDTH = "latency-predictor", "bandwidth-efficiency-predictor"
MODELS = sorted([LATENCY, BANDWIDTH])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with tracking_uri_restored():
        yield make_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScoringServer]:
    yield from scoring_server()


@pytest.fixture(scope="module")
def gw(registry: str, upstream: ScoringServer, postgres_uri: str) -> Iterator[Gateway]:
    """The gateway with a prediction log in a real Postgres (feedback is matched there)."""
    log = fresh_database(postgres_uri, "gateway_app")
    apply_schema(log)
    models = {LATENCY: upstream.url, BANDWIDTH: upstream.url}
    with running(registry, models, [LATENCY, BANDWIDTH], MONITORING_DB_URI=log) as gateway:
        yield gateway


def error(answer: Any, status: int, code: str) -> dict[str, Any]:
    """The body of an error answer, checked against the documented shape."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    for leak in ("Traceback", "stack_trace", "/work/", "site-packages", 'File "'):
        assert leak not in answer.text
    body: dict[str, Any] = ErrorBody.model_validate(answer.json()).model_dump()
    assert body["error_code"] == code
    return body


def fields(body: dict[str, Any]) -> list[tuple[int | None, str | None, str]]:
    return [(d["row"], d["field"], d["got"]) for d in body["details"]]


# -- the success path -----------------------------------------------------------------------------


def test_predict_answers_version_predictions_and_ids(gw: Gateway, upstream: ScoringServer) -> None:
    rows = records(3)
    answer = gw.post("predict", {"records": rows})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["version"]) == (LATENCY, "1")
    assert body["predictions"] == [formula(row) for row in rows]
    assert upstream.forwarded() == rows
    assert len({*body["request_ids"], answer.headers["x-request-id"]}) == 4
    assert all(uuid.UUID(i).version == 4 for i in body["request_ids"])
    single = gw.post("predict", {"records": rows[0]}, model=BANDWIDTH)
    assert single.status_code == 200 and single.headers["x-request-id"] == single.json()["request_ids"][0]


@pytest.mark.parametrize("batching", ["true", "false"])
def test_the_model_server_gets_the_request_id_the_client_gets(
    registry: str, upstream: ScoringServer, batching: str
) -> None:
    """A call that carries one request names it in X-Request-ID: the answer's id, which is also the
    prediction log's id of a lone record, and `<id>-<row>` of invocations. (Merged calls list the
    ids of their requests: tests/unit/test_gateway_batching.py.)"""
    with running(registry, {LATENCY: upstream.url}, [LATENCY], GATEWAY_BATCHING=batching) as gw:
        single = gw.post("predict", {"records": records(1)})
        assert single.status_code == 200, single.text
        assert upstream.request_ids[-1] == single.headers["x-request-id"] == single.json()["request_ids"][0]
        several = gw.post("predict", {"records": records(3)})
        assert upstream.request_ids[-1] == several.headers["x-request-id"]
        assert several.headers["x-request-id"] not in several.json()["request_ids"]
        invoked = gw.post("invocations", {"dataframe_records": records(2)})
        assert invoked.status_code == 200, invoked.text
        assert upstream.request_ids[-1] == invoked.headers["x-request-id"]
        assert uuid.UUID(invoked.headers["x-request-id"]).version == 4


def split(rows: list[dict[str, Any]], index: bool) -> dict[str, Any]:
    return {"dataframe_split": pd.DataFrame(rows).to_dict(orient="split", index=index)}


@pytest.mark.parametrize(
    "form",
    ["dataframe_records", "dataframe_split", "dataframe_split with index", "inputs", "instances", "csv"],
)
def test_invocations_forms_reach_the_model_server_as_checked(
    gw: Gateway, upstream: ScoringServer, form: str
) -> None:
    rows = records(4, seed=9)
    headers = {"Content-Type": "application/json"}
    if form == "csv":
        body, headers = pd.DataFrame(rows).to_csv(index=False).encode(), {"Content-Type": "text/csv"}
    elif form.startswith("dataframe_split"):
        body = json.dumps(split(rows, index=form.endswith("index"))).encode()
    else:
        body = json.dumps({form: rows}).encode()
    answer = gw.post("invocations", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [formula(row) for row in rows]}
    content_type, forwarded = upstream.received[-1]
    assert content_type == "application/json"
    # Every form goes on as the checked rows, columnar (MLflow's cheapest to parse): in signature order.
    columns = json.loads(forwarded)["inputs"]
    assert list(columns) == list(FEATURE_NAMES)
    assert upstream.forwarded() == rows
    assert uuid.UUID(answer.headers["x-request-id"])


# -- issue 8's input table: one test per row ------------------------------------------------------

ENDPOINTS = [("predict", "records"), ("invocations", "dataframe_records")]


@pytest.mark.parametrize("endpoint, key", ENDPOINTS)
def test_an_unknown_category_is_refused(
    gw: Gateway, upstream: ScoringServer, endpoint: str, key: str
) -> None:
    sent = len(upstream.received)
    body = error(
        gw.post(endpoint, {key: [{**records(1)[0], "network_type": "carrier-pigeon"}]}), 422, "INVALID_INPUT"
    )
    assert body["details"] == [
        {
            "row": 0,
            "field": "network_type",
            "expected": "one of fiber, cable, dsl, 4g, 5g, satellite",
            "got": 'string "carrier-pigeon"',
        }
    ]
    assert len(upstream.received) == sent  # nothing refused reaches the model server


@pytest.mark.parametrize("endpoint, key", ENDPOINTS)
def test_an_extra_column_is_refused(gw: Gateway, endpoint: str, key: str) -> None:
    body = error(gw.post(endpoint, {key: [{**records(1)[0], "colour": "red"}]}), 422, "INVALID_INPUT")
    assert body["details"] == [
        {
            "row": 0,
            "field": "colour",
            "expected": "absent (not a column of this model)",
            "got": 'string "red"',
        }
    ]


@pytest.mark.parametrize("endpoint, key", ENDPOINTS)
def test_a_value_outside_the_documented_range_is_refused(gw: Gateway, endpoint: str, key: str) -> None:
    body = error(gw.post(endpoint, {key: [{**records(1)[0], "distance_km": -5}]}), 422, "INVALID_INPUT")
    assert body["details"] == [
        {"row": 0, "field": "distance_km", "expected": "a number in [1, 20000]", "got": "number -5"}
    ]


def test_a_number_sent_as_a_string_is_refused_on_invocations(gw: Gateway) -> None:
    body = error(
        gw.post("invocations", {"dataframe_records": [{**records(1)[0], "hop_count": "8"}]}),
        422,
        "INVALID_INPUT",
    )
    assert fields(body) == [(0, "hop_count", 'string "8"')]
    assert body["details"][0]["expected"] == "a number in [1, 30]"
    boolean = error(
        gw.post("invocations", {"dataframe_records": [{**records(1)[0], "hop_count": True}]}),
        422,
        "INVALID_INPUT",
    )
    assert fields(boolean) == [(0, "hop_count", "boolean true")]


@pytest.mark.parametrize(
    "literal, got", [("1e308", "number 1e+308"), ("NaN", "NaN"), ("Infinity", "Infinity")]
)
def test_huge_and_non_finite_numbers_are_refused_on_invocations(gw: Gateway, literal: str, got: str) -> None:
    row = json.dumps({"dataframe_records": [records(1)[0]]})
    value = json.dumps(records(1)[0]["distance_km"])
    body = row.replace(f'"distance_km": {value}', f'"distance_km": {literal}', 1)
    assert literal in body
    answer = gw.post("invocations", content=body.encode(), headers={"Content-Type": "application/json"})
    assert fields(error(answer, 422, "INVALID_INPUT")) == [(0, "distance_km", got)]


@pytest.mark.parametrize("endpoint, key", ENDPOINTS)
def test_a_body_without_content_type_is_taken_as_json(gw: Gateway, endpoint: str, key: str) -> None:
    answer = gw.post(endpoint, content=json.dumps({key: records(1)}).encode())
    assert "content-type" not in answer.request.headers
    assert answer.status_code == 200, answer.text
    feedback = gw.post("feedback", content=b'{"feedback": []}')
    assert feedback.status_code == 200 and feedback.json() == {"accepted": 0, "unknown": []}


@pytest.mark.parametrize("endpoint", ["predict", "invocations", "feedback"])
def test_a_5_mb_body_is_413(gw: Gateway, upstream: ScoringServer, endpoint: str) -> None:
    sent = len(upstream.received)
    big = json.dumps({"records": [{"distance_km": 1.0, "pad": "x" * 5_000_000}]}).encode()
    body = error(
        gw.post(endpoint, content=big, headers={"Content-Type": "application/json"}), 413, "TOO_LARGE"
    )
    assert "1048576 bytes (GATEWAY_MAX_BODY_BYTES)" in body["message"]
    assert len(upstream.received) == sent


def test_a_body_over_the_limit_without_content_length_is_413(gw: Gateway) -> None:
    for endpoint in ("predict", "feedback"):
        chunks = (b"x" * 300_000 for _ in range(5))  # streamed: no Content-Length header
        answer = gw.post(endpoint, content=chunks, headers={"Content-Type": "application/json"})
        assert "content-length" not in answer.request.headers
        error(answer, 413, "TOO_LARGE")


@pytest.mark.parametrize("host", ["rebound.attacker.example", "rebound.attacker.example:8000", ""])
def test_a_foreign_host_header_is_400_before_anything_else(
    gw: Gateway, upstream: ScoringServer, host: str
) -> None:
    """DNS rebinding: a page of another site on this machine reaching the gateway under its own name."""
    sent = len(upstream.received)
    headers = {"Host": host}
    for answer in (
        gw.post("predict", {"records": records(1)}, headers=headers),
        gw.post("feedback", {"feedback": []}, headers=headers),
        gw.client.get("/health", headers=headers),
        gw.client.get("/openapi.json", headers=headers),
    ):
        assert "Host header" in error(answer, 400, "MALFORMED_REQUEST")["message"]
    assert len(upstream.received) == sent


@pytest.mark.parametrize(
    "host", ["gateway", "gateway-listener:8000", "localhost:8000", "127.0.0.1", "[::1]:8000"]
)
def test_the_gateways_own_names_are_allowed(gw: Gateway, host: str) -> None:
    assert gw.post("predict", {"records": records(1)}, headers={"Host": host}).status_code == 200
    assert gw.client.get("/metrics", headers={"Host": host}).status_code == 200


def test_extra_allowed_hosts_adds_names(registry: str, upstream: ScoringServer) -> None:
    with running(registry, {LATENCY: upstream.url}, [LATENCY], EXTRA_ALLOWED_HOSTS="ml.example") as gw:
        assert (
            gw.post("predict", {"records": records(1)}, headers={"Host": "ml.example:8000"}).status_code
            == 200
        )
        error(
            gw.post("predict", {"records": records(1)}, headers={"Host": "other.example"}),
            400,
            "MALFORMED_REQUEST",
        )


def test_21000_rows_are_413(registry: str, upstream: ScoringServer) -> None:
    rows = records(21_000, seed=11)
    with running(
        registry, {LATENCY: upstream.url}, [LATENCY], GATEWAY_MAX_BODY_BYTES=str(20 * 2**20)
    ) as roomy:
        for endpoint, key in ENDPOINTS:
            body = error(roomy.post(endpoint, {key: rows}), 413, "TOO_LARGE")
            assert body["message"] == "21000 rows in one request; at most 1000 (GATEWAY_MAX_ROWS)"
        assert roomy.post("predict", {"records": rows[:1000]}).status_code == 200
    # At the default body limit, such a request (5 MB) is refused before it is even parsed.
    with running(registry, {LATENCY: upstream.url}, [LATENCY]) as default:
        assert (
            "GATEWAY_MAX_BODY_BYTES"
            in error(default.post("predict", {"records": rows}), 413, "TOO_LARGE")["message"]
        )


def test_without_room_in_the_prediction_log_requests_get_503_before_the_model_is_called(
    registry: str, upstream: ScoringServer
) -> None:
    """Postgres unreachable, no spool: 5 records fit in memory, then the gateway pushes back."""
    unreachable = f"postgresql://nobody@127.0.0.1:{free_port()}/monitoring"
    with running(
        registry, {LATENCY: upstream.url}, [LATENCY], MONITORING_DB_URI=unreachable, LOG_BUFFER_MAX="5"
    ) as full:
        first = full.post("predict", {"records": records(3)})
        assert first.status_code == 200
        calls = len(upstream.received)
        for endpoint, key in ENDPOINTS:
            answer = full.post(endpoint, {key: records(3)})
            body = error(answer, 503, "UNAVAILABLE")
            assert "LOG_BUFFER_MAX" in body["message"] and answer.headers["retry-after"] == "2"
        feedback = [{"request_id": i, "actual": 1.0} for i in first.json()["request_ids"]]
        refused = full.post("feedback", {"feedback": feedback})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
        assert len(upstream.received) == calls  # the model was not called for what was refused
        assert full.post("predict", {"records": records(2)}).status_code == 200  # 3 + 2 fit
        assert full.metric("gateway_requests_pushed_back_total", reason="memory_full") == 3
        assert full.metric("gateway_prediction_log_dropped_total") == 0


def test_beyond_the_pending_row_limit_requests_are_shed_at_once_with_retry_after(registry: str) -> None:
    """Load shedding (GATEWAY_MAX_PENDING_ROWS=4): while 3 rows wait for a slow model server, 3 more
    are refused at once, without a model call; 1 more still fits; at the limit, a request is refused
    before its body is even parsed; with nothing pending, a request larger than the limit goes."""
    slow = ScoringServer(delay_s=2.0).start()
    try:
        with running(registry, {LATENCY: slow.url}, [LATENCY], GATEWAY_MAX_PENDING_ROWS="4") as gw:
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(gw.post, "predict", {"records": records(3)})
                deadline = time.monotonic() + 10
                while gw.app.scoring.pending[LATENCY] != 3:
                    assert time.monotonic() < deadline and not first.done(), "the first request never waited"
                    time.sleep(0.005)
                shed = gw.post("invocations", {"dataframe_records": records(3)})
                answered_before_the_slow_call = not first.done()
                fits = pool.submit(gw.post, "predict", {"records": records(1)})
                while gw.app.scoring.pending[LATENCY] != 4:
                    assert time.monotonic() < deadline and not fits.done(), "the second request never waited"
                    time.sleep(0.005)
                at_the_limit = gw.post("predict", {"records": "not even parsed"})  # shed before parsing
                assert first.result().status_code == 200 and fits.result().status_code == 200
            body = error(shed, 503, "UNAVAILABLE")
            assert body["message"] == (
                "the gateway is at capacity for latency-predictor: 3 rows are waiting for its model "
                "server (GATEWAY_MAX_PENDING_ROWS=4): try again later"
            )
            assert shed.headers["retry-after"] == "2" and answered_before_the_slow_call
            assert sum(len(call) for call in slow.calls()) == 4  # the model never saw the shed rows
            assert gw.app.scoring.pending[LATENCY] == 0
            assert gw.post("predict", {"records": records(10)}).status_code == 200
            assert error(at_the_limit, 503, "UNAVAILABLE")["message"].startswith(
                "the gateway is at capacity for latency-predictor: 4 rows are waiting"
            )
            assert gw.metric("gateway_requests_pushed_back_total", reason="queue_full") == 2
    finally:
        slow.stop()


def test_a_draining_gateway_closes_each_connection_after_its_answer(gw: Gateway) -> None:
    """worker.py's lame duck: every answer, scoring or not, says `Connection: close`."""
    assert "close" not in gw.post("predict", {"records": records(1)}).headers.get("connection", "")
    gw.app.closing = True
    try:
        for answer in (
            gw.post("predict", {"records": records(1)}),
            gw.post("invocations", {"dataframe_records": records(1)}),
            gw.client.get("/health"),
        ):
            assert answer.headers["connection"] == "close", answer.headers
    finally:
        gw.app.closing = False


# -- every problem, every mistake ------------------------------------------------------------------


def test_a_422_lists_every_bad_field_of_every_row(gw: Gateway) -> None:
    rows = records(3)
    del rows[0]["hop_count"]
    rows[1].update(distance_km="far", region=7, jitter_ms=None)
    rows[2].update(protocol="sctp", extra=1)
    body = error(gw.post("predict", {"records": rows}), 422, "INVALID_INPUT")
    assert body["message"] == "6 problem(s) in the request; each is listed in details"
    assert fields(body) == [
        (0, "hop_count", "missing"),
        (1, "distance_km", 'string "far"'),
        (1, "jitter_ms", "null"),
        (1, "region", "number 7"),
        (2, "protocol", 'string "sctp"'),
        (2, "extra", "number 1"),
    ]


@pytest.mark.parametrize(
    "endpoint, body, content_type, status, code",
    [
        ("predict", b"{", "application/json", 400, "MALFORMED_REQUEST"),
        ("predict", b"", "application/json", 400, "MALFORMED_REQUEST"),
        ("invocations", b"[" * 50_000, "application/json", 400, "MALFORMED_REQUEST"),
        ("invocations", b"\xff\xfe\x00", "application/json", 400, "MALFORMED_REQUEST"),
        ("invocations", b"distance_km\n\xff\n", "text/csv", 400, "MALFORMED_REQUEST"),
        ("predict", b'{"records": []}', "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("predict", b"distance_km\n1\n", "text/csv", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("invocations", b"{}", "application/x-parquet", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("invocations", b"{}", "application/json; charset=latin-1", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("predict", b"[1, 2]", "application/json", 422, "INVALID_INPUT"),
        ("predict", b'{"records": [1, null]}', "application/json", 422, "INVALID_INPUT"),
        ("invocations", b'{"inputs": {"distance_km": [1]}}', "application/json", 422, "INVALID_INPUT"),
        (
            "invocations",
            b'{"dataframe_records": [{}], "params": {}}',
            "application/json",
            422,
            "INVALID_INPUT",
        ),
        ("feedback", b"{", "application/json", 400, "MALFORMED_REQUEST"),
        ("feedback", b'{"feedback": []}', "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("feedback", b"[]", "application/json", 422, "INVALID_INPUT"),
    ],
)
def test_client_mistakes_are_4xx_in_the_error_shape(
    gw: Gateway, endpoint: str, body: bytes, content_type: str, status: int, code: str
) -> None:
    error(gw.post(endpoint, content=body, headers={"Content-Type": content_type}), status, code)


@pytest.mark.parametrize("endpoint", ["predict", "invocations", "feedback"])
def test_an_unknown_model_is_404_naming_the_served_ones(gw: Gateway, endpoint: str) -> None:
    payload = {"feedback": []} if endpoint == "feedback" else {"records": records(1)}
    body = error(gw.post(endpoint, payload, model="nope"), 404, "NOT_FOUND")
    assert body["message"] == f"unknown model 'nope'; the models are: {', '.join(MODELS)}"


def test_other_methods_and_paths(gw: Gateway) -> None:
    answer = gw.client.get(f"/models/{LATENCY}/predict")
    error(answer, 405, "METHOD_NOT_ALLOWED")
    assert answer.headers["allow"] == "POST"
    error(gw.client.get("/nowhere"), 404, "NOT_FOUND")


# -- the model server's failures -------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, body, expected, code",
    [
        (
            500,
            b'{"error_code": "INTERNAL_ERROR", "message": "boom", "stack_trace": "Traceback ..."}',
            502,
            "UPSTREAM_ERROR",
        ),
        (
            400,
            b'{"error_code": "BAD_REQUEST", "message": "no", "stack_trace": "Traceback (most recent"}',
            502,  # the model failed on records the gateway checked: not the client's mistake
            "UPSTREAM_ERROR",
        ),
        (200, b"not json", 502, "UPSTREAM_ERROR"),
        (404, b"Not Found", 502, "UPSTREAM_ERROR"),
    ],
)
def test_model_server_failures_never_pass_on_internals(
    gw: Gateway, upstream: ScoringServer, status: int, body: bytes, expected: int, code: str
) -> None:
    upstream.fail = (status, body)
    try:
        answer = gw.post("predict", {"records": records(1)})
        error(answer, expected, code)
        if status != 200:  # /invocations passes a 200 on as it is
            error(gw.post("invocations", {"dataframe_records": records(1)}), expected, code)
    finally:
        upstream.fail = None


def test_an_unreachable_model_server_or_no_loaded_version_is_503(
    registry: str, upstream: ScoringServer
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with running(registry, {LATENCY: dead, "ghost": upstream.url}, [LATENCY]) as degraded:
        body = error(degraded.post("predict", {"records": records(1)}), 503, "UNAVAILABLE")
        assert body["message"] == f"the model server for {LATENCY} is unavailable"
        body = error(
            degraded.post("invocations", {"dataframe_records": records(1)}, model="ghost"), 503, "UNAVAILABLE"
        )
        assert "no 'production' version loaded" in body["message"]
        # A client's mistake is still named as such.
        error(degraded.post("predict", content=b"{", model="ghost"), 400, "MALFORMED_REQUEST")
        health = degraded.client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert (
            degraded.metric(
                "gateway_requests_total", model=LATENCY, version="1", endpoint="predict", status="503"
            )
            == 1
        )


# -- feedback -------------------------------------------------------------------------------------


def test_feedback_joins_predictions_and_refuses_what_is_not_a_number(gw: Gateway) -> None:
    ids = gw.post("predict", {"records": records(2, seed=12)}).json()["request_ids"]
    for actual, got in ((True, "boolean true"), ("1.5", 'string "1.5"'), (None, "null")):
        body = error(
            gw.post("feedback", {"feedback": [{"request_id": ids[0], "actual": actual}]}),
            422,
            "INVALID_INPUT",
        )
        assert fields(body) == [(None, "feedback.0.actual", got)]
    nan = b'{"feedback": [{"request_id": "x", "actual": NaN}]}'
    body = error(
        gw.post("feedback", content=nan, headers={"Content-Type": "application/json"}), 422, "INVALID_INPUT"
    )
    assert fields(body) == [(None, "feedback.0.actual", "NaN")]
    extra = error(
        gw.post("feedback", {"feedback": [{"request_id": "x", "actual": 1, "at": 0}]}), 422, "INVALID_INPUT"
    )
    assert fields(extra) == [(None, "feedback.0.at", "number 0")]
    assert gw.post("feedback", {"feedback": [{"request_id": ids[0], "actual": 40}]}).json() == {
        "accepted": 1,
        "unknown": [],
    }
    # A repeat is unknown once the first value is stored (tests/unit/test_gateway_feedback.py).
    again = gw.post(
        "feedback", {"feedback": [{"request_id": ids[1], "actual": 7}, {"request_id": "x", "actual": 7}]}
    )
    assert again.json() == {"accepted": 1, "unknown": ["x"]}
    many = {"feedback": [{"request_id": str(i), "actual": 1.0} for i in range(1001)]}
    assert "GATEWAY_MAX_ROWS" in error(gw.post("feedback", many), 413, "TOO_LARGE")["message"]


# -- metrics and the OpenAPI description -----------------------------------------------------------


def test_metrics_are_plain_text_with_the_recorder_series(gw: Gateway) -> None:
    answer = gw.client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert "gateway_recorder_dropped_total 0.0" in answer.text and "gateway_recorder_queued" in answer.text
    assert gw.metric("gateway_requests_total", model=LATENCY, version="1", endpoint="predict", status="422")


def test_openapi_describes_records_and_every_status(gw: Gateway) -> None:
    spec = gw.client.get("/openapi.json").json()
    assert spec["components"]["schemas"]["FeatureRecord"] == record_json_schema()
    paths = spec["paths"]
    statuses = {
        ("/models/{name}/predict", "post"): {200, 400, 404, 413, 415, 422, 500, 502, 503, 504},
        ("/models/{name}/invocations", "post"): {200, 400, 404, 413, 415, 422, 500, 502, 503, 504},
        ("/models/{name}/feedback", "post"): {200, 400, 404, 413, 415, 422, 500, 503},
        ("/health", "get"): {200, 500, 503},
        ("/models", "get"): {200, 500},
        ("/metrics", "get"): {200, 500},
    }
    assert {(path, method) for path, ops in paths.items() for method in ops} == set(statuses)
    for (path, method), expected in statuses.items():
        operation = paths[path][method]
        assert {int(s) for s in operation["responses"]} == expected, path
        for status, response in operation["responses"].items():
            if int(status) >= 400 and path != "/health":
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"
                }
        if path.startswith("/models/{name}"):
            [name] = operation["parameters"]
            assert name["schema"]["enum"] == MODELS
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    predict = paths["/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert list(predict) == ["application/json"]
    records_schema = predict["application/json"]["schema"]["properties"]["records"]["oneOf"]
    assert records_schema[0]["maxItems"] == 1000 and records_schema[1] == {
        "$ref": "#/components/schemas/FeatureRecord"
    }
    forms = paths["/models/{name}/invocations"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["oneOf"]
    assert [next(iter(f["properties"])) for f in forms] == [
        "dataframe_records",
        "inputs",
        "instances",
        "dataframe_split",
    ]
    split_columns = forms[3]["properties"]["dataframe_split"]["properties"]["columns"]["prefixItems"]
    assert [c["const"] for c in split_columns] == list(FEATURE_NAMES)
    assert spec["components"]["schemas"]["FeedbackRequest"]["properties"]["feedback"]["maxItems"] == 1000


# -- a router alone --------------------------------------------------------------------------------


def test_the_status_routes_alone_answer_from_the_gateway_and_keys_they_are_given(
    upstream: ScoringServer,
) -> None:
    """status.router on an app of its own, given a gateway that has loaded nothing (not started):
    /health says degraded, naming the reachable model server; /metrics hides behind API keys."""
    settings = Settings.from_env(
        {"GATEWAY_MODELS": f"{LATENCY}={upstream.url}", "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    )
    gateway = GatewayState(settings)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(status_routes.router)
    app.dependency_overrides |= {get_gateway: lambda: gateway, get_api_keys: lambda: ApiKeys(required=True)}
    with TestClient(app, raise_server_exceptions=False) as client:
        health = client.get("/health")
        assert health.status_code == 503, health.text
        assert health.json() == {
            "status": "degraded",
            "models": {
                LATENCY: {"ok": False, "upstream": upstream.url, "upstream_ping": "HTTP 200", "version": None}
            },
        }
        assert "internal metrics port" in error(client.get("/metrics"), 404, "NOT_FOUND")["message"]
        app.dependency_overrides[get_api_keys] = lambda: ApiKeys()
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "gateway_requests_total" in metrics.text
        client.portal.call(gateway.upstreams.close)  # type: ignore[union-attr]


# -- the fast path's guard ------------------------------------------------------------------------


def test_the_declared_scoring_routes_answer_500_if_ever_reached(
    registry: str, upstream: ScoringServer, caplog: pytest.LogCaptureFixture
) -> None:
    """FastAPI declares predict and invocations for the docs; ScoringFastPath answers them. If a
    request ever reaches FastAPI's route (the fast path bypassed), it fails loudly."""
    settings = Settings.from_env(
        dict(GATEWAY_MODELS=f"{LATENCY}={upstream.url}", MLFLOW_TRACKING_URI=registry)
    )
    fastapi_app = create_app(settings).app
    bare = TestClient(fastapi_app, raise_server_exceptions=False)  # no lifespan: nothing starts
    with caplog.at_level(logging.ERROR, logger="services.gateway.routes.models"):
        for endpoint in ("predict", "invocations"):
            answer = bare.post(f"/models/{LATENCY}/{endpoint}", json={"records": records(1)})
            assert "bypassed its fast path" in error(answer, 500, "INTERNAL_ERROR")["message"]
    assert "ScoringFastPath was bypassed" in caplog.text


def test_middleware_or_dependencies_the_fast_path_would_skip_stop_the_gateway(
    registry: str, upstream: ScoringServer
) -> None:
    settings = Settings.from_env(
        dict(GATEWAY_MODELS=f"{LATENCY}={upstream.url}", MLFLOW_TRACKING_URI=registry)
    )
    with_middleware = create_app(settings)
    with_middleware.app.add_middleware(GZipMiddleware)  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="ScoringFastPath .* would skip: middleware GZipMiddleware"):
        TestClient(with_middleware).__enter__()

    # A router's routes with dependencies where it is included (the scoring routes among them).
    with_auth = create_app(settings)
    with_auth.app.include_router(models.router, dependencies=[Depends(lambda: None)])  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match=r"dependencies of /models/\{name\}/predict"):
        TestClient(with_auth).__enter__()

    # A route declared with dependencies for the scoring endpoint.
    with_route = create_app(settings)
    extra = APIRouter()
    extra.post("/models/{name}/invocations", dependencies=[Depends(lambda: None)])(models.shadowed)
    with_route.app.include_router(extra)  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match=r"dependencies of /models/\{name\}/invocations"):
        TestClient(with_route).__enter__()

    with_app_wide = create_app(settings)
    with_app_wide.app.router.dependencies.append(Depends(lambda: None))  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="would skip: app-wide dependencies"):
        TestClient(with_app_wide).__enter__()
