"""Where a request's time goes inside `mlflow models serve`, stage by stage, in process.

The scoring server (mlflow.pyfunc.scoring_server) answers `/invocations` by: parsing the JSON,
building a DataFrame cast to the signature's types, enforcing the signature on it, calling the
model's predict, and writing the answer's JSON; `invocations()` is all of it, without HTTP. Each
stage is timed here on the same input with MLflow's own functions (`_enforce_schema` is private: it
is what pyfunc's predict calls before the model's). HTTP, uvicorn and the scoring server's
middleware come on top; the 1-client rows of `make bench` show the total.

Used by `make bench` (tests/bench/bench_gateway.py), which writes the table to docs/benchmarks.md.
"""

from __future__ import annotations

import io
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import mlflow
from mlflow.models.utils import _enforce_schema
from mlflow.pyfunc import PyFuncModel, scoring_server

from contracts import synthetic
from contracts.schema import FEATURE_NAMES


def per_call_us(call: Callable[[], Any], seconds: float = 0.4) -> float:
    """Median microseconds per call over 5 repeats of about `seconds / 5` each."""
    call()
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < seconds / 25:
        call()
        n += 1
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            call()
        samples.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(samples)


def bodies(rows: int) -> dict[str, str]:
    """The same rows in the three JSON formats the scoring server takes for a DataFrame model."""
    frame = synthetic.generate(rows, seed=3)[list(FEATURE_NAMES)]
    records = frame.to_dict(orient="records")
    return {
        "dataframe_records": json.dumps({"dataframe_records": records}),
        "dataframe_split": json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}),
        "inputs": json.dumps({"inputs": frame.to_dict(orient="list")}),
    }


def stages(model: PyFuncModel, body: str) -> dict[str, float]:
    """Microseconds per stage for one body."""
    schema = model.metadata.get_input_schema()
    parsed = json.loads(body)
    frame = scoring_server.infer_and_parse_data(parsed, schema)
    enforced = _enforce_schema(frame, schema)
    implementation = model._model_impl  # the flavour's predict, after pyfunc's checks
    predictions = model.predict(frame)
    return {
        "JSON parsing": per_call_us(lambda: json.loads(body)),
        "DataFrame": per_call_us(lambda: scoring_server.infer_and_parse_data(json.loads(body), schema)),
        "signature enforcement": per_call_us(lambda: _enforce_schema(frame, schema)),
        "the model's predict": per_call_us(lambda: implementation.predict(enforced)),
        "answer JSON": per_call_us(lambda: scoring_server.predictions_to_json(predictions, io.StringIO())),
        "all of `invocations()`": per_call_us(
            lambda: scoring_server.invocations(body, "application/json", model, schema)
        ),
    }


def report(sklearn_uri: str, onnx_uri: str) -> str:
    """The markdown section: both forms, one and 16 rows, and the formats for the ONNX form."""
    models = {
        "scikit-learn": mlflow.pyfunc.load_model(sklearn_uri),
        "ONNX": mlflow.pyfunc.load_model(onnx_uri),
    }
    columns: dict[str, dict[str, float]] = {}
    for form, model in models.items():
        for rows in (1, 16):
            columns[f"{form}, {rows} row{'s' if rows > 1 else ''}"] = stages(
                model, bodies(rows)["dataframe_records"]
            )
    onnx = models["ONNX"]
    schema = onnx.metadata.get_input_schema()
    formats: dict[str, dict[int, float]] = {}
    for rows in (1, 16):
        for fmt, body in bodies(rows).items():
            formats.setdefault(fmt, {})[rows] = per_call_us(
                lambda b=body: scoring_server.invocations(b, "application/json", onnx, schema)  # type: ignore[misc]
            )
    names = list(next(iter(columns.values())))
    lines = [
        "### Where a model server's time goes (in process, microseconds per call)",
        "",
        "`tests/bench/serving_profile.py`: the stages of `mlflow models serve`'s `/invocations` timed",
        "with MLflow's own functions on `dataframe_records` bodies (median of 5 repeats). HTTP,",
        "uvicorn, the scoring server's middleware and its thread hop come on top.",
        "",
        "| stage | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{c[name]:.0f}" for c in columns.values()) + " |")
    lines += [
        "",
        "The ONNX form's `invocations()` by request format (what the gateway sends upstream is its choice):",
        "",
        "| format | 1 row | 16 rows |",
        "|---|---:|---:|",
        *(f"| `{fmt}` | {by[1]:.0f} | {by[16]:.0f} |" for fmt, by in formats.items()),
    ]
    return "\n".join(lines)
