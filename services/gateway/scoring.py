"""The request path: POST /models/{name}/predict and /models/{name}/invocations.

Kept short on purpose (the gateway may add at most about a millisecond): bodies are parsed with the
stdlib json module and checked by `validation` against the served version's precomputed columns,
answers are pre-serialised bytes, metric children are cached, and everything else (the prediction
log, the prediction histogram, parsing passthrough answers) is queued for the recorder thread.
Both routes share one implementation (`Scoring.handle`): the same limits, the same checks, the same
error shape (`contracts.errors`). Checked requests reach the model server through the
model's `Batcher` (batching.py: concurrent requests share a call), or one call each when
GATEWAY_BATCHING is off.

`ScoringFastPath` hands these two routes to `Scoring` straight from the ASGI server, skipping
FastAPI's middleware, routing and dependency machinery (a third of the gateway's CPU per request).
FastAPI declares them only for the OpenAPI description: `app.py` refuses to start when middleware
or dependencies are added that the fast path would skip, and answers 500 if the declared routes are
ever reached.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.errors import error_body
from contracts.guard import host_allowed
from services.gateway.auth import HEADERS, ApiKeys
from services.gateway.batching import Batcher, Reply, UpstreamMisbehaved
from services.gateway.metrics import GatewayMetrics
from services.gateway.predlog import PredictionLog
from services.gateway.recorder import Observation, Recorder
from services.gateway.registry import ServedModel, ServedVersion
from services.gateway.upstream import Upstreams, UpstreamTimeout, UpstreamUnavailable, request_id_header
from services.gateway.validation import (
    CSV,
    JSON,
    SCHEMA_COLUMNS,
    Refused,
    check,
    check_count,
    csv_rows,
    invocation_rows,
    media_type,
    parse_json,
    predict_rows,
)

log = logging.getLogger(__name__)

ENDPOINTS = ("predict", "invocations")
dumps = json.JSONEncoder(separators=(",", ":")).encode
_perf = time.perf_counter
_NO_REPLY = Reply(0, b"", "", "", None)


@dataclass(frozen=True)
class Answer:
    """A response: status, body bytes, content type and the X-Request-ID header (if any)."""

    status: int
    body: bytes
    content_type: str = JSON
    request_id: str | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def json(cls, status: int, payload: Any) -> Answer:
        return cls(status, dumps(payload).encode())

    @classmethod
    def error(cls, status: int, message: str, details: Iterable[Mapping[str, Any]] = ()) -> Answer:
        """An answer in the error shape of contracts.errors."""
        return cls.json(status, error_body(status, message, details))

    async def send(self, send: Send) -> None:
        """Straight to the ASGI server."""
        headers = [
            (b"content-type", self.content_type.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode()),
        ]
        if self.request_id:
            headers.append((b"x-request-id", self.request_id.encode()))
        headers.extend(self.headers)
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class Scoring:
    """Checks, forwards and measures scoring requests."""

    def __init__(
        self,
        models: dict[str, ServedModel],
        alias: str,
        upstreams: Upstreams,
        metrics: GatewayMetrics,
        recorder: Recorder,
        max_rows: int,
        max_body_bytes: int,
        batchers: dict[str, Batcher],
        prediction_log: PredictionLog | None = None,
        retry_after_s: int = 2,
        max_pending_rows: int = 0,
    ) -> None:
        self.models, self.alias, self.upstreams = models, alias, upstreams
        self.prediction_log = prediction_log  # admission: room for every answered row, or 503
        # Admission: rows forwarded per model and not answered yet, at most max_pending_rows (0: no
        # limit), or 503. One event loop per worker: no lock.
        self.max_pending_rows = max_pending_rows
        self.pending = dict.fromkeys(models, 0)
        self.retry_after = (b"retry-after", str(retry_after_s).encode())
        self.metrics, self.recorder = metrics, recorder
        self.max_rows, self.max_body_bytes = max_rows, max_body_bytes
        self.batchers = batchers  # model name -> its Batcher; empty: batching is off
        self.known = sorted(models)

    async def handle(
        self, endpoint: str, name: str, body: bytes | None, content_type: str | None, started: float
    ) -> Answer:
        """Answer one scoring request (`endpoint` is "predict" or "invocations") that arrived at
        `started` (perf_counter). `body` is None when it exceeded the body-size limit."""
        model = self.models.get(name)
        if model is None:
            self.metrics.requests.labels("unknown", "", endpoint, "404").inc()
            known = ", ".join(self.known)
            return Answer.error(404, f"unknown model {name!r}; the models are: {known}")
        if self.max_pending_rows and self.pending[name] >= self.max_pending_rows:
            return self._shed(model, endpoint, started)  # before parsing: shedding must stay cheap
        in_flight = model.metrics.in_flight
        in_flight.inc()
        try:
            if endpoint == "predict":
                return await self.predict(model, body, content_type, started)
            return await self.invocations(model, body, content_type, started)
        finally:
            in_flight.dec()

    def _too_large(self) -> Refused:
        limit = self.max_body_bytes
        return Refused(413, f"the request body is larger than {limit} bytes (GATEWAY_MAX_BODY_BYTES)")

    def _refused(self, model: ServedModel, endpoint: str, refused: Refused, started: float) -> Answer:
        current = model.current
        self._done(model, current.version if current else "", endpoint, refused.status, started, 0.0)
        return Answer.error(refused.status, refused.message, refused.details)

    def _not_loaded(self, model: ServedModel, endpoint: str, started: float) -> Answer:
        message = (
            f"model {model.name!r} has no {self.alias!r} version loaded yet "
            "(the registry is unreachable or the alias is not set)"
        )
        return self._refused(model, endpoint, Refused(503, message), started)

    def _admit(self, model: ServedModel, endpoint: str, rows: int, started: float) -> Answer | None:
        """Room for `rows` more: under the model's pending-row limit (load shedding), then reserved
        in the prediction log (so nothing answered is ever left out of it). A 503 + Retry-After
        answer, before the model is called, when either has none."""
        waiting, limit = self.pending[model.name], self.max_pending_rows
        if limit and waiting and waiting + rows > limit:
            return self._shed(model, endpoint, started)
        reason = self.prediction_log.refusal(rows) if self.prediction_log is not None else None
        return None if reason is None else self._pushed_back(model, endpoint, started, reason)

    def _shed(self, model: ServedModel, endpoint: str, started: float) -> Answer:
        """503 + Retry-After: the rows waiting for the model's server are at GATEWAY_MAX_PENDING_ROWS."""
        self.metrics.pushed_back.labels("queue_full").inc()
        reason = (
            f"the gateway is at capacity for {model.name}: {self.pending[model.name]} rows are waiting "
            f"for its model server (GATEWAY_MAX_PENDING_ROWS={self.max_pending_rows})"
        )
        return self._pushed_back(model, endpoint, started, reason)

    def _pushed_back(self, model: ServedModel, endpoint: str, started: float, reason: str) -> Answer:
        current = model.current
        self._done(model, current.version if current else "", endpoint, 503, started, 0.0)
        answer = Answer.error(503, f"{reason}: try again later")
        return Answer(503, answer.body, headers=(self.retry_after,))

    def _release(self, rows: int) -> None:
        if self.prediction_log is not None:
            self.prediction_log.release(rows)

    def _done(
        self, model: ServedModel, version: str, endpoint: str, status: int, started: float, upstream: float
    ) -> float:
        """Record the request's metrics; return its total duration in seconds."""
        total = _perf() - started
        m = model.metrics
        (m.duration_predict if endpoint == "predict" else m.duration_invocations).observe(total)
        if upstream:
            m.upstream.observe(upstream)
            m.overhead.observe(total - upstream)
        m.count(version, endpoint, status)
        return total

    async def _admit_and_forward(
        self,
        model: ServedModel,
        current: ServedVersion,
        endpoint: str,
        rows: list[Any],
        started: float,
        request_id: str,
    ) -> tuple[Answer | None, Reply, float]:
        """Reserve prediction-log room for `rows` (`_admit`), then `_forward` them as the signature's
        columns; the room is given back whenever no answer comes of it."""
        pushed_back = self._admit(model, endpoint, len(rows), started)
        if pushed_back is not None:
            return pushed_back, _NO_REPLY, 0.0
        self.pending[model.name] += len(rows)
        try:
            failed, reply, upstream = await self._forward(
                model, current, endpoint, rows, current.columns.body(rows), started, request_id
            )
        except BaseException:
            self._release(len(rows))
            raise
        finally:
            self.pending[model.name] -= len(rows)
        if failed is not None:
            self._release(len(rows))
        return failed, reply, upstream

    async def _forward(
        self,
        model: ServedModel,
        current: ServedVersion,
        endpoint: str,
        rows: list[Any],
        payload: bytes,
        started: float,
        request_id: str,
    ) -> tuple[Answer | None, Reply, float]:
        """Send checked `rows` to the model server (`payload`, JSON, is their body when they go
        alone, with the gateway's `request_id` in X-Request-ID): (an error answer or None, the model
        server's reply, the upstream time: waiting for a turn and the call that carried them)."""
        version = current.version
        batcher = self.batchers.get(model.name)
        sent = _perf()
        try:
            if batcher is None:
                reply = Reply(
                    *await self.upstreams.post(
                        model.upstream, payload, JSON, headers=request_id_header([request_id])
                    ),
                    None,
                )
            else:
                reply = await batcher.send(rows, payload, current, model.metrics, request_id)
        except UpstreamUnavailable as exc:
            return (
                self._upstream_failed(model, version, endpoint, 503, started, exc, request_id),
                _NO_REPLY,
                0.0,
            )
        except UpstreamTimeout as exc:
            return (
                self._upstream_failed(model, version, endpoint, 504, started, exc, request_id),
                _NO_REPLY,
                0.0,
            )
        except UpstreamMisbehaved as exc:  # a merged answer that cannot be split back
            upstream = _perf() - sent
            self._done(model, version, endpoint, 502, started, upstream)
            return Answer.error(502, f"the model server for {model.name} {exc}"), _NO_REPLY, upstream
        upstream = _perf() - sent
        if reply.status != 200:
            code, message = upstream_error(model.name, reply.status, reply.content)
            self._done(model, version, endpoint, code, started, upstream)
            return Answer.error(code, message), _NO_REPLY, upstream
        return None, reply, upstream

    def _upstream_failed(
        self,
        model: ServedModel,
        version: str,
        endpoint: str,
        status: int,
        started: float,
        exc: Exception,
        request_id: str,
    ) -> Answer:
        self._done(model, version, endpoint, status, started, 0.0)
        what = "is unavailable" if status == 503 else "timed out"
        extra = {"model": model.name, "request_id": request_id}
        log.warning("model server of %s %s: %s", model.name, what, exc, extra=extra)
        return Answer.error(status, f"the model server for {model.name} {what}")

    async def predict(
        self, model: ServedModel, body: bytes | None, content_type: str | None, started: float
    ) -> Answer:
        current = model.current
        try:
            if body is None:
                raise self._too_large()
            media_type(content_type, (JSON,))
            records = predict_rows(parse_json(body))
            check_count(records, self.max_rows)
            if current is None:
                return self._not_loaded(model, "predict", started)
            check(records, current.columns)
        except Refused as refused:
            return self._refused(model, "predict", refused, started)
        # The answer's ids, made before the call: the model server gets the request's one too.
        request_ids = [str(uuid.uuid4()) for _ in records]
        request_id = request_ids[0] if len(request_ids) == 1 else str(uuid.uuid4())
        failed, reply, upstream = await self._admit_and_forward(
            model, current, "predict", records, started, request_id
        )
        if failed is not None:
            return failed
        version = reply.version or current.version  # the version that answered (`Response`)
        predictions = reply.predictions  # the request's share of a merged answer, or None
        if predictions is None:
            try:
                predictions = json.loads(reply.content)["predictions"]
                if type(predictions) is not list:
                    raise TypeError("predictions is not a list")
            except (ValueError, KeyError, TypeError):
                self._release(len(records))
                self._done(model, version, "predict", 502, started, upstream)
                return Answer.error(502, f"the model server for {model.name} sent no predictions")

        answer = {
            "model": model.name,
            "version": version,
            "predictions": predictions,
            "request_ids": request_ids,
        }
        encoded = dumps(answer).encode()
        total = self._done(model, version, "predict", 200, started, upstream)
        self.recorder.put(
            Observation(
                model=model.name,
                version=version,
                ts=time.time(),
                latency_ms=total * 1000,
                request_ids=request_ids,
                records=records,
                predictions=predictions,
                reserved=len(records),
            )
        )
        return Answer(200, encoded, JSON, request_id)

    async def invocations(
        self, model: ServedModel, body: bytes | None, content_type: str | None, started: float
    ) -> Answer:
        """MLflow's scoring protocol: JSON (dataframe_records, dataframe_split, inputs, instances)
        or CSV, checked like /predict; the checked rows go to the model server as `Columns.body`
        encodes them, and its answer comes back as it is (its share, when batched)."""
        current = model.current
        try:
            if body is None:
                raise self._too_large()
            if media_type(content_type, (JSON, CSV)) == CSV:
                rows = csv_rows(body, current.columns if current else SCHEMA_COLUMNS)
            else:
                rows = invocation_rows(parse_json(body))
            check_count(rows, self.max_rows)
            if current is None:
                return self._not_loaded(model, "invocations", started)
            check(rows, current.columns)
        except Refused as refused:
            return self._refused(model, "invocations", refused, started)
        request_id = str(uuid.uuid4())  # its rows are `<request_id>-<row>` in the prediction log
        failed, reply, upstream = await self._admit_and_forward(
            model, current, "invocations", rows, started, request_id
        )
        if failed is not None:
            return failed
        version = reply.version or current.version
        content, answer_type = reply.content, reply.content_type
        if reply.predictions is not None:  # the request's share of a merged answer
            content, answer_type = dumps({"predictions": reply.predictions}).encode(), JSON
        total = self._done(model, version, "invocations", 200, started, upstream)
        self.recorder.put(  # the answer is parsed by the recorder thread
            Observation(
                model=model.name,
                version=version,
                ts=time.time(),
                latency_ms=total * 1000,
                records=rows,
                raw_response=content,
                base_id=request_id,
                reserved=len(rows),
            )
        )
        return Answer(200, content, answer_type or JSON, request_id)


def upstream_error(name: str, status: int, content: bytes) -> tuple[int, str]:
    """The status and message for a failed model server answer: always the server's failure, 502
    (504 for a timeout), with its message when it has a clean one, never its stack trace.

    `mlflow models serve` answers 400 also when the model itself raises. The gateway forwards only
    records it has checked against the schema and the signature, so a refusal upstream is the
    model failing on valid input, not the client's mistake: counted as a 5xx, which the alerts and
    the rollout watch see (docs/closed-loop.md)."""
    if status == 504:
        return 504, f"the model server for {name} timed out"
    if status not in (400, 422):
        return 502, f"the model server for {name} failed (HTTP {status})"
    try:
        payload = json.loads(content)
        message = payload.get("message") if isinstance(payload, dict) else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        message = None
    if not isinstance(message, str) or "Traceback" in message:
        return 502, f"the model server for {name} failed on a valid request (HTTP {status})"
    return 502, f"the model server for {name} failed on a valid request: {message[:500]}"


class BodyTooLarge(HTTPException):
    """A request body over GATEWAY_MAX_BODY_BYTES, found while FastAPI reads it (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes (GATEWAY_MAX_BODY_BYTES)")


class ScoringFastPath:
    """The outermost ASGI app: POST /models/{name}/{predict,invocations} go straight to `Scoring`,
    everything else (and the lifespan) to the FastAPI app. Every request's `Host` is checked against
    `allowed` here (400 otherwise: DNS rebinding, contracts/guard.py), every POST gets the body-size
    limit, and every POST /models/... the API-key check when keys are required (`auth.py`). An
    unexpected error is logged and answered 500 in the error shape, never with a stack trace."""

    def __init__(self, app: ASGIApp, scoring: Scoring, keys: ApiKeys, allowed: frozenset[bytes]) -> None:
        self.app = app
        self.scoring = scoring
        self.keys = keys
        self.allowed = allowed
        self.max_body_bytes = scoring.max_body_bytes
        # Draining (worker.py): every answer says `Connection: close`, so each client's next request
        # opens a connection to the next worker instead of racing the close of an idle one.
        self.closing = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.closing:
            send = closing_connection(send)
        host = content_type = length = authorization = api_key = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value
            elif key == b"content-type":
                content_type = value.decode("latin-1")
            elif key == b"content-length":
                length = value
            elif key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"x-api-key":
                api_key = value.decode("latin-1")
        if not host_allowed(host, self.allowed):
            await BAD_HOST.send(send)
            return
        if scope["method"] == "POST":
            parts = scope["path"].split("/")
            if len(parts) > 1 and parts[1] == "models":
                client = self.keys.client(authorization, api_key) if self.keys.required else "-"
                if client is None:
                    self.scoring.metrics.unauthenticated.inc()
                    await UNAUTHENTICATED.send(send)
                    return
                self.scoring.metrics.clients.labels(client).inc()
            declared = int(length) if length is not None and length.isdigit() else None
            if len(parts) == 4 and parts[1] == "models" and parts[3] in ENDPOINTS:
                started = _perf()
                body = await read_body(receive, declared, self.max_body_bytes)
                try:
                    answer = await self.scoring.handle(parts[3], parts[2], body, content_type, started)
                except Exception:
                    log.exception("unexpected error answering %s", scope["path"])
                    answer = Answer.error(500, "internal error in the gateway (see its log)")
                await answer.send(send)
                return
            if declared is not None and declared > self.max_body_bytes:
                await Answer.error(413, BodyTooLarge(self.max_body_bytes).detail).send(send)
                return
            receive = limited(receive, self.max_body_bytes)
        await self.app(scope, receive, send)


def closing_connection(send: Send) -> Send:
    """`send` with `Connection: close` added to the answer's headers (the server then closes the
    connection once the answer is out)."""

    async def send_closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    return send_closing


BAD_HOST = Answer.error(400, "the Host header names no host this service answers to")
UNAUTHENTICATED = Answer(
    401,
    dumps(error_body(401, f"an API key is required: send {HEADERS}")).encode(),
    headers=((b"www-authenticate", b'Bearer realm="gateway"'),),
)


async def read_body(receive: Receive, declared: int | None, limit: int) -> bytes | None:
    """The whole request body from ASGI `http.request` messages, or None as soon as it is known to
    exceed `limit` bytes (what is left unread, the server discards)."""
    if declared is not None and declared > limit:
        return None
    message = await receive()
    body: bytes = message.get("body", b"")
    while message.get("more_body", False):
        message = await receive()
        body += message.get("body", b"")
        if len(body) > limit:
            return None
    return body if len(body) <= limit else None


def limited(receive: Receive, limit: int) -> Receive:
    """`receive` that raises BodyTooLarge once more than `limit` body bytes came in."""
    received = 0

    async def receive_limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_limited
