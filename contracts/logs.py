"""One log format for every service we write: JSON lines on stdout.

Each line holds `time` (UTC, ISO 8601, milliseconds), `level`, `service`, `logger`, `message`, then
`request_id` when the line was logged while answering a request, and any field passed with
`extra=`. `configure_logging(service)` is the one call each entry point makes; it routes every
logger (ours, uvicorn's error and access loggers, MLflow's) through the same formatter.

The request id comes from, in order: `extra={"request_id": ...}` on the call, or the id that
`with_request_id` bound to the request being answered (the FastAPI services' entry points wrap their
app in it). The gateway's scoring path wraps nothing (no middleware on its fast path): it makes its
ids itself and passes them in `extra`.

Standard library only: the socket listener's image has no other package.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any, TextIO

# Attributes every LogRecord has; anything else came in through `extra=`. uvicorn adds
# `color_message` (the message with terminal colours): not for JSON.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
_SKIP = _STANDARD | {"message", "asctime", "color_message", "taskName"}

REQUEST_ID_HEADER = "X-Request-ID"
# An id a client sent is kept when it looks like one (a UUID, a trace id): short, no spaces or
# quotes, so it can go into a log line and a header as it is. Anything else gets a fresh id.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, service, logger, message, request_id, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or _request_id.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _SKIP and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str | int = "INFO", stream: TextIO | None = None) -> None:
    """Route every logger of this process to `stream` (stdout; a command whose stdout is its
    result, the trainer, passes stderr) as JSON lines naming `service`. Loggers that had handlers
    of their own (uvicorn's) lose them and propagate to the root's one instead."""
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # urllib3 warns on every retry of a client; the caller reports the failure once.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def with_request_id(app: ASGIApp) -> ASGIApp:
    """`app` with a request id bound to each HTTP request: the client's X-Request-ID when it looks
    like an id, else a new UUID; the answer carries it back in X-Request-ID. Lifespan and other
    scopes pass through untouched. Applied by the entry points of the FastAPI services (not the
    gateway: its scoring path makes and returns its ids itself, without any wrapper)."""

    async def wrapped(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        sent = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"")
        given = sent.decode("latin-1")
        request_id = given if _CLIENT_ID.fullmatch(given) else str(uuid.uuid4())
        token = _request_id.set(request_id)

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)

    return wrapped
