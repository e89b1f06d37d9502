"""The request path: POST /models/{name}/predict and /models/{name}/invocations.

Kept short on purpose (the gateway may add at most about a millisecond): bodies are parsed with the
stdlib json module and checked against a precomputed column spec, answers are pre-serialised bytes,
metric children are cached, and everything else (drift, the prediction log, the prediction
histogram, parsing passthrough payloads) is queued for the recorder thread. `ScoringFastPath` hands
these two routes to this module straight from the ASGI server, skipping FastAPI's middleware,
routing and dependency machinery (a third of the gateway's CPU per request); FastAPI still declares
them (OpenAPI docs) and serves them the same way.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.feedback import RememberedPredictions
from services.gateway.metrics import GatewayMetrics
from services.gateway.recorder import Observation, Recorder
from services.gateway.registry import ServedModel
from services.gateway.upstream import Upstreams, UpstreamTimeout, UpstreamUnavailable
from services.gateway.validation import validate_records

log = logging.getLogger(__name__)

JSON = "application/json"
ENDPOINTS = ("predict", "invocations")
dumps = json.JSONEncoder(separators=(",", ":")).encode
_perf = time.perf_counter


@dataclass(frozen=True)
class Answer:
    """A response: status, body bytes, content type and the X-Request-ID header (if any)."""

    status: int
    body: bytes
    content_type: str = JSON
    request_id: str | None = None

    @classmethod
    def json(cls, status: int, payload: Any) -> Answer:
        return cls(status, dumps(payload).encode())

    def response(self) -> Response:
        """As a Starlette response (for FastAPI routes)."""
        headers = {"content-type": self.content_type}
        if self.request_id:
            headers["x-request-id"] = self.request_id
        return Response(self.body, self.status, headers=headers)

    async def send(self, send: Send) -> None:
        """Straight to the ASGI server."""
        headers = [
            (b"content-type", self.content_type.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode()),
        ]
        if self.request_id:
            headers.append((b"x-request-id", self.request_id.encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class Scoring:
    """Validates, forwards and measures scoring requests."""

    def __init__(
        self,
        models: dict[str, ServedModel],
        alias: str,
        upstreams: Upstreams,
        metrics: GatewayMetrics,
        remembered: RememberedPredictions,
        recorder: Recorder,
    ) -> None:
        self.models, self.alias, self.upstreams = models, alias, upstreams
        self.metrics, self.remembered, self.recorder = metrics, remembered, recorder
        self.known = sorted(models)

    async def handle(
        self, endpoint: str, name: str, body: bytes, content_type: str | None, started: float
    ) -> Answer:
        """Answer one scoring request (`endpoint` is "predict" or "invocations") that arrived at
        `started` (perf_counter)."""
        model = self.models.get(name)
        if model is None:
            self.metrics.requests.labels("unknown", "", endpoint, "404").inc()
            return Answer.json(404, {"message": f"unknown model {name!r}", "models": self.known})
        in_flight = model.metrics.in_flight
        in_flight.inc()
        try:
            if endpoint == "predict":
                return await self.predict(model, body, started)
            # MLflow's server fails on a request without Content-Type: default it to JSON.
            return await self.invocations(model, body, content_type or JSON, started)
        finally:
            in_flight.dec()

    def _not_loaded(self, model: ServedModel, endpoint: str) -> Answer:
        model.metrics.count("", endpoint, 503)
        message = (
            f"model {model.name!r} has no {self.alias!r} version loaded yet "
            "(the registry is unreachable or the alias is not set)"
        )
        return Answer.json(503, {"message": message})

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

    def _upstream_failed(
        self, model: ServedModel, version: str, endpoint: str, status: int, started: float, exc: Exception
    ) -> Answer:
        self._done(model, version, endpoint, status, started, 0.0)
        what = "is unavailable" if status == 503 else "timed out"
        log.warning("model server of %s %s: %s", model.name, what, exc, extra={"model": model.name})
        return Answer.json(status, {"message": f"the model server for {model.name} {what}: {exc}"})

    async def predict(self, model: ServedModel, body: bytes, started: float) -> Answer:
        current = model.current
        if current is None:
            return self._not_loaded(model, "predict")
        version = current.version
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            self._done(model, version, "predict", 400, started, 0.0)
            return Answer.json(400, {"message": f"the request body is not valid JSON: {exc}"})
        records = payload.get("records") if type(payload) is dict else None
        if type(records) is dict:
            records = [records]
        if type(records) is not list or not records:
            self._done(model, version, "predict", 422, started, 0.0)
            return Answer.json(
                422,
                {
                    "message": 'the body must be {"records": [{feature: value, ...}, ...]}',
                    "problems": [{"record": None, "field": "records", "problem": "missing or empty"}],
                },
            )
        problems = validate_records(records, current.columns)
        if problems:
            self._done(model, version, "predict", 422, started, 0.0)
            message = f"{len(problems)} problem(s) in the records"
            return Answer.json(422, {"message": message, "problems": problems})

        sent = _perf()
        try:
            status, content, _ = await self.upstreams.post(
                model.upstream, dumps({"dataframe_records": records}).encode(), JSON
            )
        except UpstreamUnavailable as exc:
            return self._upstream_failed(model, version, "predict", 503, started, exc)
        except UpstreamTimeout as exc:
            return self._upstream_failed(model, version, "predict", 504, started, exc)
        upstream = _perf() - sent
        if status != 200:
            code, message = predict_error(model.name, status, content)
            self._done(model, version, "predict", code, started, upstream)
            return Answer.json(code, {"message": message})
        try:
            predictions = json.loads(content)["predictions"]
        except (ValueError, KeyError, TypeError):
            self._done(model, version, "predict", 502, started, upstream)
            return Answer.json(502, {"message": f"the model server for {model.name} sent no predictions"})

        request_ids = [str(uuid.uuid4()) for _ in records]
        answer = {
            "model": model.name,
            "version": version,
            "predictions": predictions,
            "request_ids": request_ids,
        }
        encoded = dumps(answer).encode()
        total = self._done(model, version, "predict", 200, started, upstream)
        self.remembered.add(model.name, request_ids, predictions)  # feedback may follow at once
        self.recorder.put(
            Observation(
                model=model.name,
                version=version,
                ts=time.time(),
                latency_ms=total * 1000,
                request_ids=request_ids,
                records=records,
                predictions=predictions,
            )
        )
        request_id = request_ids[0] if len(request_ids) == 1 else str(uuid.uuid4())
        return Answer(200, encoded, JSON, request_id)

    async def invocations(self, model: ServedModel, body: bytes, content_type: str, started: float) -> Answer:
        current = model.current
        if current is None:
            return self._not_loaded(model, "invocations")
        version = current.version
        sent = _perf()
        try:
            status, content, answer_type = await self.upstreams.post(model.upstream, body, content_type)
        except UpstreamUnavailable as exc:
            return self._upstream_failed(model, version, "invocations", 503, started, exc)
        except UpstreamTimeout as exc:
            return self._upstream_failed(model, version, "invocations", 504, started, exc)
        upstream = _perf() - sent
        if status >= 400:
            content = without_stack_trace(content)
        total = self._done(model, version, "invocations", status, started, upstream)
        request_id = str(uuid.uuid4())
        if status == 200:  # parsed (or skipped) by the recorder thread
            self.recorder.put(
                Observation(
                    model=model.name,
                    version=version,
                    ts=time.time(),
                    latency_ms=total * 1000,
                    raw_request=body,
                    raw_response=content,
                    base_id=request_id,
                )
            )
        return Answer(status, content, answer_type or JSON, request_id)


def predict_error(name: str, status: int, content: bytes) -> tuple[int, str]:
    """The status and message for a failed upstream call: 4xx with its message, 5xx as 502/504."""
    if status == 504:
        return 504, f"the model server for {name} timed out"
    if status >= 500:
        return 502, f"the model server for {name} failed (HTTP {status})"
    try:
        payload = json.loads(content)
        message = payload.get("message") if isinstance(payload, dict) else None
    except (ValueError, UnicodeDecodeError):
        message = None
    if not isinstance(message, str):
        message = content.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    return status, message


def without_stack_trace(content: bytes) -> bytes:
    """An upstream error body without its stack trace (JSON `stack_trace`, or a raw traceback)."""
    try:
        payload = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict):
        if "stack_trace" not in payload:
            return content
        payload.pop("stack_trace")
        return dumps(payload).encode()
    if b"Traceback" in content:
        return b'{"message": "the model server failed"}'
    return content


class ScoringFastPath:
    """The outermost ASGI app: POST /models/{name}/{predict,invocations} go straight to `Scoring`,
    everything else (and the lifespan) to the FastAPI app. An unexpected error is logged and answered
    500 with a message, never a stack trace."""

    def __init__(self, app: ASGIApp, scoring: Scoring) -> None:
        self.app = app
        self.scoring = scoring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            parts = scope["path"].split("/")
            if len(parts) == 4 and parts[1] == "models" and parts[3] in ENDPOINTS:
                started = _perf()
                body = await read_body(receive)
                content_type = None
                for key, value in scope["headers"]:
                    if key == b"content-type":
                        content_type = value.decode("latin-1")
                        break
                try:
                    answer = await self.scoring.handle(parts[3], parts[2], body, content_type, started)
                except Exception:
                    log.exception("unexpected error answering %s", scope["path"])
                    answer = Answer.json(500, {"message": "internal error in the gateway (see its log)"})
                await answer.send(send)
                return
        await self.app(scope, receive, send)


async def read_body(receive: Receive) -> bytes:
    """The whole request body from ASGI `http.request` messages."""
    message = await receive()
    body: bytes = message.get("body", b"")
    while message.get("more_body", False):
        message = await receive()
        body += message.get("body", b"")
    return body
