"""The gateway's OpenAPI description: feature records exactly as `validation` checks them (names,
types, ranges, vocabularies from contracts.schema), the scoring protocol's forms, the limits, the
bodies and answers of the routes (routes/), and every status each route answers with the error shape
of contracts.errors.

schemathesis (`--checks all`, tests/integration/test_gateway_openapi.py) holds the gateway to it:
what the description allows is accepted, what it forbids is refused with a documented status.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictStr

from contracts.errors import error_responses
from contracts.schema import FEATURES
from services.gateway.validation import (
    CSV,
    JSON,
    RECORD_FORMATS,
    SPLIT_FORMAT,
    feature_json_schema,
    record_json_schema,
)

RECORD_REF = {"$ref": "#/components/schemas/FeatureRecord"}


class PredictAnswer(BaseModel):
    model: str = Field(description="the registered model")
    version: str = Field(description="the model version that answered")
    predictions: list[float] = Field(description="one per record, in order")
    request_ids: list[str] = Field(description="one per record: the ids feedback refers to")


class InvocationsAnswer(BaseModel):
    predictions: list[float] = Field(description="one per row, in order (MLflow's answer, unchanged)")


class ModelHealth(BaseModel):
    ok: bool
    upstream: str
    upstream_ping: str
    version: str | None


class HealthAnswer(BaseModel):
    status: str = Field(description='"ok" (HTTP 200) or "degraded" (HTTP 503)')
    models: dict[str, ModelHealth]


class ServedModelInfo(BaseModel):
    name: str
    alias: str
    version: str | None
    run_id: str | None
    upstream: str
    signature_columns: list[str]


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: StrictStr = Field(description="an id from a predict answer's request_ids")
    actual: Annotated[float, Strict(), Field(allow_inf_nan=False)] = Field(
        description="the observed value of the model's target: a finite number (not a boolean or a string)"
    )


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feedback: list[FeedbackItem] = Field(description="at most GATEWAY_MAX_ROWS items")


class FeedbackAnswer(BaseModel):
    accepted: int
    unknown: list[str] = Field(
        description="request ids with no prediction of this model in the prediction log, or with "
        "feedback already"
    )


REQUEST_ID_HEADER = {
    "X-Request-ID": {
        "description": "predict: the request id of a one-record request, else an id of the request; "
        "invocations: row i has the feedback id `<X-Request-ID>-<i>`",
        "schema": {"type": "string"},
    }
}
_SCORING_ERRORS = {
    400: "the body is not valid JSON (or not UTF-8 CSV)",
    404: "unknown model (the message names the served ones)",
    413: "the body is over GATEWAY_MAX_BODY_BYTES, or it has more rows than GATEWAY_MAX_ROWS",
    415: "a Content-Type this route does not take",
    422: "the body's shape or its rows are invalid: details lists every bad field",
    502: "the model server failed (its stack trace is never passed on)",
    503: "the model server is unreachable, no version is loaded yet, or the prediction log has no "
    "room (Retry-After says when to try again; the model was not called)",
    504: "the model server did not answer within GATEWAY_UPSTREAM_TIMEOUT_S",
}
FEEDBACK_ERRORS = error_responses(
    {
        400: "the body is not valid JSON",
        404: "unknown model (the message names the served ones)",
        413: "the body is over GATEWAY_MAX_BODY_BYTES, or it has more items than GATEWAY_MAX_ROWS",
        415: "the body is not application/json",
        422: "invalid items (a boolean, a string or a non-finite `actual`, an unknown field): details "
        "lists each",
        503: "the prediction log has no room or cannot be read (with Retry-After: nothing was kept, send "
        "it again), or this gateway keeps none",
    }
)
INTERNAL_ERROR = error_responses({500: "a bug in the gateway: logged, answered without internals"})


def _records(max_rows: int) -> dict[str, Any]:
    return {"type": "array", "items": RECORD_REF, "minItems": 1, "maxItems": max_rows}


def predict_docs(max_rows: int) -> dict[str, Any]:
    """openapi_extra of POST /models/{name}/predict."""
    records = {
        "oneOf": [_records(max_rows), RECORD_REF],
        "description": f"1 to {max_rows} records (GATEWAY_MAX_ROWS); a single object is one record",
    }
    schema = {
        "type": "object",
        "required": ["records"],
        "properties": {"records": records},
        "additionalProperties": False,
    }
    return {
        "requestBody": {
            "required": True,
            "description": "Feature records. A missing Content-Type is taken as JSON.",
            "content": {JSON: {"schema": schema}},
        }
    }


def invocations_docs(max_rows: int) -> dict[str, Any]:
    """openapi_extra of POST /models/{name}/invocations: MLflow's scoring protocol."""
    names = [f.name for f in FEATURES]
    forms: list[dict[str, Any]] = [
        {
            "type": "object",
            "required": [key],
            "properties": {key: _records(max_rows)},
            "additionalProperties": False,
        }
        for key in RECORD_FORMATS
    ]
    split = {
        "type": "object",
        "required": ["columns", "data"],
        "description": "pandas' orient='split'. Described here in the schema's column order; the "
        "columns may come in any order (each data row in the same order). `index` is ignored.",
        "properties": {
            "columns": {
                "type": "array",
                "prefixItems": [{"const": name} for name in names],
                "minItems": len(names),
                "maxItems": len(names),
            },
            "data": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_rows,
                "items": {
                    "type": "array",
                    "prefixItems": [feature_json_schema(f) for f in FEATURES],
                    "minItems": len(names),
                    "maxItems": len(names),
                },
            },
            "index": {"type": "array", "description": "row labels, ignored"},
        },
        "additionalProperties": False,
    }
    forms.append(
        {
            "type": "object",
            "required": [SPLIT_FORMAT],
            "properties": {SPLIT_FORMAT: split},
            "additionalProperties": False,
        }
    )
    return {
        "requestBody": {
            "required": True,
            "description": "MLflow scoring protocol, exactly one of dataframe_records, inputs, instances "
            f"(arrays of records) or dataframe_split; 1 to {max_rows} rows. Also {CSV} with a header "
            "line and the same columns. A missing Content-Type is taken as JSON.",
            "content": {JSON: {"schema": {"oneOf": forms}}},
        }
    }


def scoring_responses(answer: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"model": answer, "description": description, "headers": REQUEST_ID_HEADER},
        **error_responses(_SCORING_ERRORS),
    }


# The scoring routes' request bodies: ScoringFastPath reads them itself, so FastAPI cannot describe them.
SCORING_BODIES = {"/models/{name}/predict": predict_docs, "/models/{name}/invocations": invocations_docs}


def complete(schema: dict[str, Any], max_rows: int, models: list[str]) -> dict[str, Any]:
    """FastAPI's generated description plus what it cannot know: the scoring routes' bodies, the
    FeatureRecord component, the limits (GATEWAY_MAX_ROWS), the served models as the values of every
    `{name}`, and 500 on every operation. (The routes are declared once, at import; these are the
    facts of one gateway's settings.)"""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["FeatureRecord"] = record_json_schema()
    components["FeedbackRequest"]["properties"]["feedback"]["maxItems"] = max_rows
    for path, docs in SCORING_BODIES.items():
        schema["paths"][path]["post"].update(docs(max_rows))
    error = INTERNAL_ERROR[500]
    for operations in schema["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", ()):
                if parameter["in"] == "path" and parameter["name"] == "name":
                    parameter["schema"]["enum"] = list(models)
            operation["responses"].setdefault(
                "500",
                {
                    "description": error["description"],
                    "content": {JSON: {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                },
            )
    return schema
