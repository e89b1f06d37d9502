"""The gateway's strict request checks: parsing each accepted form, and every kind of bad field,
against a real MLflow signature of the feature schema."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from typing import Any

import pytest
from mlflow.models import infer_signature

from contracts import synthetic
from contracts.errors import ErrorBody, describe, error_body
from contracts.models import parse_upstreams
from contracts.schema import CATEGORICAL_FEATURES, FEATURE_NAMES, FEATURES, NUMERIC_FEATURES
from services.gateway import Settings
from services.gateway.scoring import upstream_error
from services.gateway.validation import (
    MAX_DETAILS,
    SCHEMA_COLUMNS,
    Columns,
    Refused,
    check,
    check_count,
    check_rows,
    column,
    columns_from_signature,
    csv_rows,
    invocation_rows,
    media_type,
    parse_json,
    predict_rows,
    record_json_schema,
)
from tests.conftest import python_env


@pytest.fixture(scope="module")
def columns() -> Columns:
    frame = synthetic.generate(20)[list(FEATURE_NAMES)]
    spec = columns_from_signature(infer_signature(frame, frame["distance_km"].to_numpy()))
    assert spec is not None
    return spec


def record(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = synthetic.generate(1, seed=5)[list(FEATURE_NAMES)].to_dict(orient="records")[0]
    return {**row, **changes}


def refused(call: Any, *args: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        call(*args)
    return caught.value


def test_spec_follows_the_signature_and_the_schema(columns: Columns) -> None:
    assert columns == SCHEMA_COLUMNS  # same names, kinds, ranges and vocabularies
    kinds = {c.name: c.kind for c in columns}
    assert kinds == {
        **dict.fromkeys(NUMERIC_FEATURES, "number"),
        **dict.fromkeys(CATEGORICAL_FEATURES, "string"),
    }
    by_name = {c.name: c for c in columns}
    for feature in FEATURES:
        spec = by_name[feature.name]
        assert spec.required
        if feature.is_numeric:
            assert (spec.low, spec.high) == (feature.low, feature.high)
        else:
            assert spec.categories == frozenset(feature.categories)


def test_valid_rows_pass(columns: Columns) -> None:
    rows = synthetic.generate(500, seed=2, drift=1.0)[list(FEATURE_NAMES)].to_dict(orient="records")
    assert check_rows([*rows, record(hop_count=7), record(distance_km=20000)], columns) == ([], 0)


def test_every_bad_field_is_named_with_what_was_expected_and_got(columns: Columns) -> None:
    missing = record()
    del missing["hop_count"]
    rows = [
        missing,
        record(distance_km="8", region=3, jitter_ms=True, bandwidth_mbps=math.inf, packet_loss_pct=math.nan),
        record(protocol=None, network_type="carrier-pigeon", distance_km=-5, link_utilization=1e308),
        record(colour="red"),
        "row",
    ]
    problems, total = check_rows(rows, columns)
    assert total == len(problems) == 12
    assert [(p["row"], p["field"], p["expected"], p["got"]) for p in problems] == [
        (0, "hop_count", "a number in [1, 30]", "missing"),
        (1, "distance_km", "a number in [1, 20000]", 'string "8"'),
        (1, "bandwidth_mbps", "a number in [1, 10000]", "Infinity"),
        (1, "jitter_ms", "a number in [0, 200]", "boolean true"),
        (1, "packet_loss_pct", "a number in [0, 20]", "NaN"),
        (1, "region", "one of north-america, europe, asia-pacific, south-america, africa", "number 3"),
        (2, "distance_km", "a number in [1, 20000]", "number -5"),
        (2, "link_utilization", "a number in [0, 0.99]", "number 1e+308"),
        (2, "network_type", "one of fiber, cable, dsl, 4g, 5g, satellite", 'string "carrier-pigeon"'),
        (2, "protocol", "one of tcp, udp, quic", "null"),
        (3, "colour", "absent (not a column of this model)", 'string "red"'),
        (4, None, "an object of column: value", 'string "row"'),
    ]


def test_problems_are_listed_up_to_a_bound(columns: Columns) -> None:
    rows = [{"x": 1}] * 200  # 12 missing columns and one unknown each: 2600 problems
    problems, total = check_rows(rows, columns)
    assert total == 2600 and len(problems) == MAX_DETAILS
    error = refused(check, rows, columns)
    assert (
        error.status == 422 and error.message.startswith("2600 problem(s)") and "first 1000" in error.message
    )


def test_checking_is_fast(columns: Columns) -> None:
    """On the request path: a thousand rows in well under the gateway's millisecond budget per row."""
    rows = synthetic.generate(1000, seed=3)[list(FEATURE_NAMES)].to_dict(orient="records")
    started = time.perf_counter()
    for _ in range(5):
        assert check_rows(rows, columns) == ([], 0)
    assert (time.perf_counter() - started) / 5 < 0.05  # measured: about 2 ms


def test_optional_and_untyped_columns() -> None:
    spec = Columns(
        (
            SCHEMA_COLUMNS.columns[0],
            column("note", "string", required=False),
            column("blob", "any"),
            column("n", "integer"),
            column("flag", "boolean"),
        )
    )
    good = {"distance_km": 5, "blob": [1], "n": 3.0, "flag": False}
    assert check_rows([good, {**good, "note": None}, {**good, "note": "x"}], spec) == ([], 0)
    problems, _ = check_rows([{**good, "n": 2.5, "flag": 1, "blob": None}], spec)
    assert [(p["field"], p["expected"], p["got"]) for p in problems] == [
        ("blob", "a value", "null"),
        ("n", "an integer", "number 2.5"),
        ("flag", "true or false", "number 1"),
    ]
    # The upstream body: one list per column in column order; an absent optional value is null.
    assert spec.order == ("distance_km", "note", "blob", "n", "flag")
    assert json.loads(spec.body([{**good, "note": "x"}, good])) == {
        "inputs": {
            "distance_km": [5, 5],
            "note": ["x", None],
            "blob": [[1], [1]],
            "n": [3.0, 3.0],
            "flag": [False, False],
        }
    }


def test_the_upstream_body_is_columnar_in_signature_order(columns: Columns) -> None:
    rows = [record(), {**record(), "distance_km": 7.5}]
    body = json.loads(columns.body([dict(reversed(row.items())) for row in rows]))
    assert list(body) == ["inputs"]
    assert list(body["inputs"]) == list(columns.order) == [c.name for c in columns]
    assert body["inputs"]["distance_km"] == [rows[0]["distance_km"], 7.5]
    single = Columns((SCHEMA_COLUMNS.columns[0],))
    assert json.loads(single.body([{"distance_km": 7.5}])) == {"inputs": {"distance_km": [7.5]}}


# -- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type, accepted",
    [
        (None, "application/json"),
        ("", "application/json"),
        ("application/json", "application/json"),
        ("Application/JSON; charset=UTF-8", "application/json"),
        ("text/csv; charset=utf-8", "text/csv"),
    ],
)
def test_accepted_media_types(content_type: str | None, accepted: str) -> None:
    assert media_type(content_type, ("application/json", "text/csv")) == accepted


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/json; charset=latin-1", "application/json; format=pandas-split", "text/csv"],
)
def test_other_media_types_are_415(content_type: str) -> None:
    assert refused(media_type, content_type, ("application/json",)).status == 415


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"\xff\xfe{", b"[" * 100_000, b"1" * 5000],
    ids=["empty", "cut", "bytes", "deep", "int"],
)
def test_what_is_not_json_is_400(body: bytes) -> None:
    error = refused(parse_json, body)
    assert error.status == 400 and error.message.startswith("the request body is not valid JSON")


def test_predict_bodies() -> None:
    rows = [record(), record(hop_count=3)]
    assert predict_rows({"records": rows}) == rows
    assert predict_rows({"records": rows[0]}) == [rows[0]]
    for bad in ({"rows": rows}, [rows], {"records": []}, {"records": "x"}, {"records": rows, "extra": 1}):
        error = refused(predict_rows, bad)
        assert error.status == 422 and error.details, bad


def test_scoring_protocol_bodies() -> None:
    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    split = {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}
    assert invocation_rows({"dataframe_records": rows}) == rows
    assert invocation_rows({"dataframe_split": split}) == rows
    assert invocation_rows({"dataframe_split": {**split, "index": [7, 8]}}) == rows  # index ignored
    assert invocation_rows({"inputs": rows}) == rows
    assert invocation_rows({"instances": rows}) == rows


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {},
        {"dataframe_records": [{"a": 1}], "inputs": [{"a": 1}]},
        {"dataframe_records": [{"a": 1}], "params": {}},
        {"dataframe_records": []},
        {"dataframe_records": {"a": [1]}},
        {"inputs": {"a": [1, 2]}},
        {"dataframe_split": [[1]]},
        {"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}},
        {"dataframe_split": {"columns": ["a", "a"], "data": [[1, 2]]}},
        {"dataframe_split": {"columns": ["a"]}},
        {"dataframe_split": {"columns": "a", "data": [[1]]}},
        {"dataframe_split": {"columns": ["a"], "data": [[1]], "index": 0}},
        {"dataframe_split": {"columns": ["a"], "data": [[1]], "dtype": "x"}},
    ],
)
def test_malformed_scoring_bodies_are_422(payload: Any) -> None:
    error = refused(invocation_rows, payload)
    assert error.status == 422 and error.details


def test_csv_bodies(columns: Columns) -> None:
    text = "distance_km,network_type,hop_count\n860,dsl,8\n1.5e3,fiber,\n"
    assert csv_rows(text.encode(), columns) == [
        {"distance_km": 860.0, "network_type": "dsl", "hop_count": 8.0},
        {"distance_km": 1500.0, "network_type": "fiber", "hop_count": None},
    ]
    # Cells that are not plain numbers stay strings: the check refuses them by name.
    rows = csv_rows(b"distance_km\nnan\n1_000\n inf\n", columns)
    assert rows == [{"distance_km": "nan"}, {"distance_km": "1_000"}, {"distance_km": " inf"}]
    assert refused(csv_rows, b"distance_km\n", columns).status == 422
    assert refused(csv_rows, b"a,a\n1,2\n", columns).status == 422
    assert refused(csv_rows, b"a,b\n1\n", columns).details[0]["got"] == "1 cells"
    assert refused(csv_rows, b'a\n"x\n', columns).status == 400
    assert refused(csv_rows, b"a\n\xff\n", columns).status == 400


def test_row_limit() -> None:
    check_count([{}] * 10, 10)
    error = refused(check_count, [{}] * 11, 10)
    assert error.status == 413 and "GATEWAY_MAX_ROWS" in error.message


def test_record_json_schema_is_the_feature_schema() -> None:
    schema = record_json_schema()
    assert schema["required"] == list(FEATURE_NAMES) and schema["additionalProperties"] is False
    for feature in FEATURES:
        prop = schema["properties"][feature.name]
        if feature.is_numeric:
            assert prop == {
                "type": "number",
                "minimum": feature.low,
                "maximum": feature.high,
                "description": feature.description,
            }
        else:
            assert prop["type"] == "string" and prop["enum"] == list(feature.categories)


# -- the error shape ------------------------------------------------------------------------------


def test_error_shape_and_descriptions() -> None:
    body = error_body(422, "bad", [{"row": 0, "field": "x", "expected": "a number", "got": describe("8")}])
    assert ErrorBody.model_validate(body).error_code == "INVALID_INPUT"
    assert error_body(409, "taken")["error_code"] == "CONFLICT"
    values = [None, True, 1.5, -math.inf, 10**80, "x" * 100, [1], {"a": 1}]
    assert [describe(v) for v in values] == [
        "null",
        "boolean true",
        "number 1.5",
        "-Infinity",
        f"number {'1' + '0' * 39}...",
        f'string "{"x" * 40}..."',
        "array",
        "object",
    ]


def test_model_server_errors_are_502_with_their_message_but_never_a_stack_trace() -> None:
    """Records reach the model only once checked, so its refusal is its failure (a 5xx)."""
    body = json.dumps({"error_code": "BAD_REQUEST", "message": "bad input", "stack_trace": "Traceback ..."})
    assert upstream_error("m", 400, body.encode()) == (
        502,
        "the model server for m failed on a valid request: bad input",
    )
    assert upstream_error("m", 500, body.encode()) == (502, "the model server for m failed (HTTP 500)")
    assert upstream_error("m", 404, b"not found")[0] == 502  # a wrong upstream, not the client's fault
    assert upstream_error("m", 504, b"Request processing time exceeded limit")[0] == 504
    traced = json.dumps({"message": 'Traceback (most recent call last):\n  File "/srv/x.py"'}).encode()
    assert "Traceback" not in upstream_error("m", 400, traced)[1]


# -- settings -------------------------------------------------------------------------------------


def test_models_setting() -> None:
    assert parse_upstreams(" a=http://x:1/ , b=https://y:2", "S") == {"a": "http://x:1", "b": "https://y:2"}
    for bad in ("", "a", "a=ftp://x", "=http://x:1"):
        with pytest.raises(ValueError, match="^S "):
            parse_upstreams(bad, "S")
    settings = Settings.from_env(dict(GATEWAY_MODELS="m=http://h:1", MLFLOW_TRACKING_URI="http://t:5000"))
    assert settings.upstreams() == {"m": "http://h:1"} and settings.port == 8000
    assert (settings.max_body_bytes, settings.max_rows, settings.feedback_wait_s) == (2**20, 1000, 3.0)


def test_bad_settings_stop_the_gateway_with_one_line() -> None:
    env = {**python_env(), "GATEWAY_MODELS": "latency-predictor", "MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "services.gateway"], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "gateway: error: invalid settings: GATEWAY_MODELS: Value error, "
        "GATEWAY_MODELS item 'latency-predictor' is not name=http://host:port"
    )
