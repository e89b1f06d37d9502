"""The gateway's plain-Python request checks against a real MLflow signature of the feature schema."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from mlflow.models import infer_signature

from contracts import synthetic
from contracts.schema import CATEGORICAL_FEATURES, FEATURE_NAMES, NUMERIC_FEATURES
from services.gateway import Settings, parse_models
from services.gateway.scoring import predict_error, without_stack_trace
from services.gateway.validation import Column, columns_from_signature, records_from_payload, validate_records
from tests.conftest import python_env


@pytest.fixture(scope="module")
def columns() -> tuple[Column, ...]:
    frame = synthetic.generate(20)[list(FEATURE_NAMES)]
    spec = columns_from_signature(infer_signature(frame, frame["distance_km"].to_numpy()))
    assert spec is not None
    return spec


def record() -> dict[str, object]:
    return synthetic.generate(1, seed=5)[list(FEATURE_NAMES)].to_dict(orient="records")[0]


def test_spec_follows_the_schema(columns: tuple[Column, ...]) -> None:
    kinds = {c.name: c.kind for c in columns}
    assert kinds == {
        **dict.fromkeys(NUMERIC_FEATURES, "number"),
        **dict.fromkeys(CATEGORICAL_FEATURES, "string"),
    }
    assert all(c.required for c in columns)


def test_valid_records_and_unknown_categories_pass(columns: tuple[Column, ...]) -> None:
    good = record()
    assert (
        validate_records([good, {**good, "protocol": "sctp", "extra": 1}, {**good, "hop_count": 7}], columns)
        == []
    )


def test_every_problem_is_named(columns: tuple[Column, ...]) -> None:
    missing = record()
    del missing["hop_count"]
    mistyped = {**record(), "distance_km": "far", "region": 3, "jitter_ms": True, "bandwidth_mbps": math.inf}
    problems = validate_records([missing, mistyped, {**record(), "protocol": None}, "row"], columns)
    assert problems == [
        {"record": 0, "field": "hop_count", "problem": "missing field"},
        {"record": 1, "field": "distance_km", "problem": "expected a number, got string"},
        {"record": 1, "field": "bandwidth_mbps", "problem": "expected a finite number, got inf"},
        {"record": 1, "field": "jitter_ms", "problem": "expected a number, got boolean"},
        {"record": 1, "field": "region", "problem": "expected a string, got integer"},
        {"record": 2, "field": "protocol", "problem": "null value"},
        {"record": 3, "field": None, "problem": "expected an object, got string"},
    ]


def test_scoring_payload_rows() -> None:
    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert records_from_payload({"dataframe_records": rows}) == rows
    assert (
        records_from_payload({"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}})
        == rows
    )
    assert records_from_payload({"inputs": [[1, 2]]}) is None


def test_upstream_errors_keep_their_message_but_not_their_stack_trace() -> None:
    body = json.dumps({"error_code": "BAD_REQUEST", "message": "bad input", "stack_trace": "Traceback ..."})
    assert predict_error("m", 400, body.encode()) == (400, "bad input")
    assert predict_error("m", 500, body.encode())[0] == 502
    assert predict_error("m", 504, b"Request processing time exceeded limit")[0] == 504
    assert json.loads(without_stack_trace(body.encode())) == {
        "error_code": "BAD_REQUEST",
        "message": "bad input",
    }
    assert b"Traceback" not in without_stack_trace(b"Traceback (most recent call last): ...")
    assert without_stack_trace(b"plain text") == b"plain text"


def test_models_setting() -> None:
    assert parse_models(" a=http://x:1/ , b=https://y:2") == {"a": "http://x:1", "b": "https://y:2"}
    for bad in ("", "a", "a=ftp://x", "=http://x:1"):
        with pytest.raises(ValueError):
            parse_models(bad)
    settings = Settings(GATEWAY_MODELS="m=http://h:1", MLFLOW_TRACKING_URI="http://t:5000")  # type: ignore[call-arg]
    assert (
        settings.upstreams() == {"m": "http://h:1"} and settings.port == 8000 and settings.drift_window == 500
    )


def test_bad_settings_stop_the_gateway_with_one_line() -> None:
    env = {**python_env(), "GATEWAY_MODELS": "latency-predictor", "MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "services.gateway"], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "gateway: error: invalid settings: GATEWAY_MODELS: Value error, "
        "GATEWAY_MODELS item 'latency-predictor' is not name=http://host:port"
    )
