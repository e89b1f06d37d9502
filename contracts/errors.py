"""The one error shape every service answers with, and the FastAPI handlers that produce it.

    HTTP 422
    {"error_code": "INVALID_INPUT",
     "message": "2 problem(s) in the request; each is listed in details",
     "details": [
       {"row": 0, "field": "distance_km", "expected": "a number in [1, 20000]", "got": "number -5"},
       {"row": 1, "field": "network_type", "expected": "one of fiber, cable, dsl, 4g, 5g, satellite",
        "got": "string \\"carrier-pigeon\\""}]}

`error_code` and `message` are the fields of MLflow's own error answers (its REST API and scoring
server), so a client of the MLflow scoring protocol reads ours the same way. `details` lists every
problem found, empty when the message says it all: `row` is the index of a record (null outside
records), `field` the column, or the dotted location of the value (null for the whole body);
`expected` and `got` are short texts. No answer carries a stack trace or a file path: an unexpected
error is logged and answered 500 `INTERNAL_ERROR`.

FastAPI is imported only by `install_error_handlers` (the services' HTTP apps); the rest is plain.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

# error_code by HTTP status; other statuses get their reason phrase (409 -> "CONFLICT").
CODES: dict[int, str] = {
    400: "MALFORMED_REQUEST",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "INVALID_INPUT",
    500: "INTERNAL_ERROR",
    502: "UPSTREAM_ERROR",
    503: "UNAVAILABLE",
    504: "UPSTREAM_TIMEOUT",
}
_GOT_CHARS = 40  # a value quoted in `got` is cut to this many characters


class ErrorDetail(BaseModel):
    """One problem: where it is, what was expected there and what was sent."""

    row: int | None = Field(description="index of the record (null outside records)")
    field: str | None = Field(description="the column, or the dotted location of the value (null: the body)")
    expected: str = Field(description='what is accepted there, e.g. "a number in [1, 20000]"')
    got: str = Field(description='what was sent, e.g. "string \\"8\\"", "NaN", "missing"')


class ErrorBody(BaseModel):
    """Every error answer of every service."""

    error_code: str = Field(description="stable, upper case: INVALID_INPUT, TOO_LARGE, NOT_FOUND, ...")
    message: str = Field(description="what went wrong, for a person")
    details: list[ErrorDetail] = Field(description="every problem found; may be empty")


def code_for(status: int) -> str:
    """The error_code of an HTTP status."""
    if status in CODES:
        return CODES[status]
    try:
        return HTTPStatus(status).phrase.upper().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "ERROR"


def error_body(status: int, message: str, details: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The error answer for `status` as a JSON-ready dict."""
    return {"error_code": code_for(status), "message": message, "details": list(details)}


def detail(row: int | None, field: str | None, expected: str, got: str) -> dict[str, Any]:
    return {"row": row, "field": field, "expected": expected, "got": got}


def describe(value: object) -> str:
    """A short, JSON-flavoured description of a sent value for `got`: 'number -5', 'string "8"',
    'boolean true', 'null', 'NaN', 'Infinity', 'array', 'object'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean true" if value else "boolean false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return f"number {value!r}"
    if isinstance(value, int):
        text = str(value) if abs(value) < 10**_GOT_CHARS else f"{str(value)[:_GOT_CHARS]}..."
        return f"number {text}"
    if isinstance(value, str):
        text = value if len(value) <= _GOT_CHARS else f"{value[:_GOT_CHARS]}..."
        return f"string {json.dumps(text)}"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


# What a pydantic error message says is expected, for the ones whose wording is not "Input should be ...".
_EXPECTED = {"missing": "a value", "extra_forbidden": "absent (not a field of this body)"}


def validation_details(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic / FastAPI validation errors as details (the `body`/`query`/`path` prefix dropped)."""
    found = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        kind = str(error.get("type", ""))
        message = str(error.get("msg", ""))
        expected = _EXPECTED.get(kind) or message.removeprefix("Input should be ").removeprefix(
            "Value error, "
        )
        got = "missing" if kind == "missing" else describe(error.get("input"))
        found.append(detail(None, ".".join(loc) or None, expected, got))
    return found


def error_responses(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` documenting error statuses with the ErrorBody schema."""
    return {status: {"model": ErrorBody, "description": text} for status, text in descriptions.items()}


def body_errors(descriptions: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """`error_responses` of a route that takes a JSON body: what install_error_handlers answers for
    a bad body (400 not JSON, 415 not sent as JSON, 422 invalid), plus the route's own statuses."""
    return error_responses(
        {
            400: "the body is not valid JSON",
            415: "the body is not sent as application/json",
            422: "the body is invalid: details lists every problem",
            **(descriptions or {}),
        }
    )


def install_error_handlers(app: FastAPI, rejected_level: int = logging.INFO) -> None:
    """Make every error `app` answers follow the shape: HTTP errors (404, 405, 413, ...), request
    validation (422, logged at `rejected_level`; invalid JSON 400; a body that is not JSON 415) and
    unexpected exceptions (500, logged with their traceback, never sent)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response

    def answer(status: int, message: str, details: Iterable[Mapping[str, Any]] = (), **kw: Any) -> Response:
        return JSONResponse(error_body(status, message, details), status, **kw)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = exc.detail if isinstance(exc.detail, str) else code_for(exc.status_code).lower()
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return answer(exc.status_code, message, headers=exc.headers)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            reason = (first.get("ctx") or {}).get("error", "invalid JSON")
            return answer(400, f"the request body is not valid JSON: {reason}")
        if any(tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes) for e in errors):
            content_type = request.headers.get("content-type", "")
            return answer(415, f"send the body as application/json (got Content-Type {content_type!r})")
        details = validation_details(errors)
        log.log(
            rejected_level,
            "rejected %s %s: %s",
            request.method,
            request.url.path,
            "; ".join(
                f"{d['field'] or 'body'}: expected {d['expected']}, got {d['got']}" for d in details[:3]
            ),
        )
        return answer(422, f"{len(details)} problem(s) in the request; each is listed in details", details)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
        return answer(500, "internal error (see the service's log)")

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)
