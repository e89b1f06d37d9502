"""The one log format (contracts/logs.py), through real loggers: every line one JSON object with
time, level, service, logger and message; `extra=` fields as keys; uvicorn's loggers routed the same
way; the request id of the request being answered on the lines logged while answering it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from contracts.logs import configure_logging, with_request_id

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """configure_logging into a buffer; the root logger and uvicorn's are put back afterwards."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access"]
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in names}
    level = logging.getLogger().level
    buffer = io.StringIO()
    configure_logging("unit-test", stream=buffer)
    yield buffer
    for name, (handlers, propagate) in saved.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate
    logging.getLogger().setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert all(line.startswith("{") for line in text.splitlines()), text
    return [json.loads(line) for line in text.splitlines()]


def test_a_line_has_the_common_fields_and_the_extra_ones(stream: io.StringIO) -> None:
    logging.getLogger("services.example").warning("disk %s is full", "/data", extra={"free_bytes": 0})
    [line] = lines(stream)
    assert TIME.fullmatch(line.pop("time"))
    assert line == {
        "level": "warning",
        "service": "unit-test",
        "logger": "services.example",
        "message": "disk /data is full",
        "free_bytes": 0,
    }


def test_request_id_from_extra_and_exceptions_in_one_line(stream: io.StringIO) -> None:
    try:
        raise ValueError("bad row\nsecond line")
    except ValueError:
        logging.getLogger("services.example").exception("failed", extra={"request_id": "r-1"})
    [line] = lines(stream)
    assert line["request_id"] == "r-1" and line["level"] == "error"
    assert "ValueError: bad row" in line["exception"]


def test_uvicorn_loggers_write_the_same_format(stream: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://127.0.0.1:1")
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:2", "GET", "/", "1.1", 200)
    error, access = lines(stream)
    assert error["logger"] == "uvicorn.error" and error["message"] == "Uvicorn running on http://127.0.0.1:1"
    assert access["service"] == "unit-test" and access["message"] == '127.0.0.1:2 - "GET / HTTP/1.1" 200'


def call(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """Run one HTTP request through the ASGI `app`; the messages it sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent


async def answering_app(scope: Any, receive: Any, send: Any) -> None:
    logging.getLogger("services.example").info("answering %s", scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_with_request_id_keeps_a_clients_id_and_logs_it(stream: io.StringIO) -> None:
    start, _ = call(with_request_id(answering_app), [(b"x-request-id", b"trace-42")])
    assert (b"x-request-id", b"trace-42") in start["headers"]
    assert (b"content-type", b"text/plain") in start["headers"]
    [line] = lines(stream)
    assert line["request_id"] == "trace-42" and line["message"] == "answering /"
    logging.getLogger("services.example").info("after the request")
    assert "request_id" not in lines(stream)[-1]


def test_with_request_id_replaces_what_is_not_an_id(stream: io.StringIO) -> None:
    start, _ = call(with_request_id(answering_app), [(b"x-request-id", b'"}\r\nx: y')])
    issued = dict(start["headers"])[b"x-request-id"].decode()
    assert uuid.UUID(issued)
    assert lines(stream)[0]["request_id"] == issued
