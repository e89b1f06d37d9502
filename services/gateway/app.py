"""The gateway's HTTP API (FastAPI; OpenAPI docs at /docs) and the state behind it.

`create_app(settings)` wires the parts: the registry poller, the pooled upstream connections and the
batching in front of them, the recorder thread (prediction log), feedback matched in the log
(`feedback.py`) and the scoring request path (`scoring.py`). It keeps nothing another replica would
need. Every error answer has the shape of `contracts.errors`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any

from fastapi import FastAPI, Path
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, Strict, StrictStr

from contracts.errors import error_body, install_error_handlers
from contracts.guard import allowed_hosts
from services.gateway import Settings
from services.gateway.auth import ApiKeys
from services.gateway.batching import build_batchers
from services.gateway.feedback import FeedbackMatcher, LogUnavailable
from services.gateway.metrics import GatewayMetrics
from services.gateway.openapi import (
    FEEDBACK_ERRORS,
    HealthAnswer,
    InvocationsAnswer,
    PredictAnswer,
    ServedModelInfo,
    complete,
    invocations_docs,
    predict_docs,
    scoring_responses,
)
from services.gateway.predlog import Feedback, Prediction, PredictionLog
from services.gateway.recorder import Recorder
from services.gateway.registry import RegistryPoller, ServedModel, ServedVersion
from services.gateway.scoring import Scoring, ScoringFastPath
from services.gateway.upstream import Upstreams

log = logging.getLogger(__name__)


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


class Gateway:
    """Everything one gateway process holds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.models: dict[str, ServedModel] = {
            name: ServedModel(name, url, self.metrics.for_model(name))
            for name, url in settings.upstreams().items()
        }
        # With batching, the batchers keep GATEWAY_UPSTREAM_CONCURRENCY (they queue what waits).
        retries = {m.upstream: self.metrics.upstream_retries.labels(m.name) for m in self.models.values()}
        self.upstreams = Upstreams(
            settings.upstream_timeout_s,
            settings.health_cache_s,
            0 if settings.batching else settings.upstream_concurrency,
            settings.upstream_retry_s,
            lambda url: retries[url].inc() if url in retries else None,
        )
        batchers = build_batchers(self.models, self.upstreams.post, settings) if settings.batching else {}
        self.prediction_log = (
            PredictionLog(
                settings.monitoring.db_uri,
                self.metrics,
                settings.log.batch_size,
                settings.log.flush_s,
                settings.log.buffer_max,
                settings.spool_dir,
                settings.spool_max_bytes,
                settings.spool_fsync_s,
            )
            if settings.monitoring.db_uri
            else None
        )
        self.matcher = (
            FeedbackMatcher(settings.monitoring.db_uri, settings.feedback_wait_s, self.prediction_log.flush)
            if self.prediction_log is not None
            else None
        )
        self.recorder = Recorder(settings, self.metrics, self.prediction_log)
        self.scoring = Scoring(
            self.models,
            settings.alias,
            self.upstreams,
            self.metrics,
            self.recorder,
            settings.max_rows,
            settings.max_body_bytes,
            batchers,
            self.prediction_log,
            settings.retry_after_s,
            settings.max_pending_rows,
        )
        self.poller = RegistryPoller(
            settings.mlflow.tracking_uri, settings.alias, self.models, settings.refresh_s, self._loaded
        )

    async def start(self) -> None:
        if self.prediction_log is not None:
            self.prediction_log.start()
        self.recorder.start()
        self.poller.start()
        log.info(
            "gateway started",
            extra={"models": self.settings.upstreams(), "prediction_log": self.prediction_log is not None},
        )

    async def wait_loaded(self, timeout_s: float) -> None:
        """Return once every model has a version loaded, or after `timeout_s` (then the models not
        loaded answer 503 until they are, as before)."""
        deadline = time.monotonic() + timeout_s
        while not all(m.current for m in self.models.values()):
            if time.monotonic() >= deadline:
                missing = [m.name for m in self.models.values() if m.current is None]
                log.warning("accepting requests before every model is loaded", extra={"not_loaded": missing})
                return
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop polling, finish queued work, flush the prediction log."""
        self.poller.stop()
        await self.upstreams.close()
        self.recorder.stop()
        if self.prediction_log is not None:
            self.prediction_log.stop()
        if self.matcher is not None:
            self.matcher.close()
        log.info("gateway stopped")

    def _loaded(self, model: ServedModel, previous: ServedVersion | None, loaded: ServedVersion) -> None:
        """Registry thread: `model` now serves `loaded`."""
        info, alias = self.metrics.model_info, self.settings.alias
        if previous is not None:
            with suppress(KeyError):
                info.remove(model.name, previous.version, alias, previous.run_id)
        info.labels(model.name, loaded.version, alias, loaded.run_id).set(1)

    async def feedback(self, model: ServedModel, body: FeedbackRequest) -> FeedbackAnswer | JSONResponse:
        """Match actual values with their predictions in the prediction log and append them to it.
        Answered 503 (nothing kept, so the client can send it again) when the log has no room for
        them or cannot be read."""
        started = time.perf_counter()
        current = model.current
        version = current.version if current else ""
        if self.prediction_log is None or self.matcher is None:
            model.metrics.count(version, "feedback", 503)
            message = (
                "feedback is matched in the prediction log, and this gateway keeps none (MONITORING_DB_URI)"
            )
            return JSONResponse(error_body(503, message), 503)
        reserved = len(body.feedback)
        reason = self.prediction_log.refusal(reserved)
        if reason is None:
            try:
                found = await self.matcher.match(model.name, [item.request_id for item in body.feedback])
            except LogUnavailable as exc:
                self.prediction_log.release(reserved)
                log.warning("feedback not matched: the prediction log cannot be read: %s", exc)
                reason = "the prediction log cannot be read to match feedback (see the gateway log)"
        if reason is not None:
            model.metrics.count(version, "feedback", 503)
            headers = {"Retry-After": str(self.settings.retry_after_s)}
            return JSONResponse(error_body(503, f"{reason}: try again later"), 503, headers=headers)
        unknown: list[str] = []
        joined: list[Feedback | Prediction] = []
        now = time.time()
        for item in body.feedback:
            if item.request_id in found.open:
                found.open.discard(item.request_id)  # a second value for the same id in one post is unknown
                joined.append(Feedback(now, item.request_id, item.actual))
            else:
                unknown.append(item.request_id)
        self.prediction_log.add(joined, reserved)  # gives back the rows of the unknown ids
        if joined:
            self.metrics.feedback.labels(model.name).inc(len(joined))
        model.metrics.duration_feedback.observe(time.perf_counter() - started)
        model.metrics.count(version, "feedback", 200)
        return FeedbackAnswer(accepted=len(joined), unknown=unknown)

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy when every model server answers /ping and every model has a version loaded."""
        models = list(self.models.values())
        pings = await self.upstreams.ping_all([m.upstream for m in models])
        detail: dict[str, Any] = {}
        for model, (reachable, ping) in zip(models, pings, strict=True):
            current = model.current
            detail[model.name] = {
                "ok": reachable and current is not None,
                "upstream": model.upstream,
                "upstream_ping": ping,
                "version": current.version if current else None,
            }
        return all(d["ok"] for d in detail.values()), detail

    def describe(self) -> list[dict[str, Any]]:
        """The served models: version, alias, run id, upstream, signature columns."""
        served = []
        for model in self.models.values():
            current = model.current
            served.append(
                {
                    "name": model.name,
                    "alias": self.settings.alias,
                    "version": current.version if current else None,
                    "run_id": current.run_id if current else None,
                    "upstream": model.upstream,
                    "signature_columns": [c.name for c in current.columns or ()] if current else [],
                }
            )
        return served


def fast_path_problems(app: FastAPI, shadowed: object) -> list[str]:
    """What `app` would apply to the scoring routes that ScoringFastPath skips: middleware and
    dependencies. Each must be applied in ScoringFastPath / Scoring instead."""
    found = [f"middleware {m.cls.__name__}" for m in app.user_middleware]  # type: ignore[attr-defined]
    if app.router.dependencies:
        found.append("app-wide dependencies")
    for route in app.routes:
        if isinstance(route, APIRoute) and route.endpoint is shadowed and route.dependencies:
            found.append(f"dependencies of {route.path}")
    return found


def create_app(settings: Settings, on_ready: Callable[[], None] | None = None) -> ScoringFastPath:
    """The gateway: the FastAPI app (its lifespan starts and stops the background work) behind the
    scoring fast path, which takes the two scoring routes before FastAPI's middleware stack."""
    gateway = Gateway(settings)
    keys = ApiKeys(settings.api_keys, settings.api_keys_file, settings.require_api_keys)
    known = sorted(gateway.models)
    # The path parameter of every /models/{name}/... route (FastAPI resolves annotations globally,
    # so the per-app enum goes in the default).
    model_name = Path(description="a served model", json_schema_extra={"enum": known})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        problems = fast_path_problems(app, shadowed)
        if problems:
            raise RuntimeError(
                "ScoringFastPath answers /models/{name}/predict and /invocations before FastAPI, so "
                f"it would skip: {', '.join(problems)}. Apply them in services/gateway/scoring.py."
            )
        await gateway.start()
        await gateway.wait_loaded(settings.ready_timeout_s)  # uvicorn accepts after this
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(
        title="Prediction gateway",
        summary="Validated predictions, MLflow scoring protocol, feedback and monitoring.",
        version="1",
        lifespan=lifespan,
        strict_content_type=False,  # a body without Content-Type is JSON, as on the scoring routes
    )
    app.state.gateway = gateway
    install_error_handlers(app)

    async def shadowed(name: str = model_name) -> Response:
        """Only documents a scoring route: ScoringFastPath answers it before FastAPI routes."""
        log.error("POST /models/%s/... reached FastAPI: ScoringFastPath was bypassed", name)
        message = "internal error in the gateway: a scoring route bypassed its fast path (see its log)"
        return JSONResponse(error_body(500, message), 500)

    app.post(
        "/models/{name}/predict",
        summary="Predict for feature records",
        description="Records are checked against the served version (types, finite numbers, ranges, "
        "categories, no missing or unknown columns); a 422 lists every bad field.",
        openapi_extra=predict_docs(settings.max_rows),
        responses=scoring_responses(
            PredictAnswer, "model, version, predictions and one request id per record"
        ),
        response_model=None,
    )(shadowed)
    app.post(
        "/models/{name}/invocations",
        summary="MLflow scoring protocol, checked like predict, then passed to the model server",
        description="Checked like predict. The answer's X-Request-ID header gives the rows the "
        "feedback ids `<X-Request-ID>-<row>`.",
        openapi_extra=invocations_docs(settings.max_rows),
        responses=scoring_responses(InvocationsAnswer, "the model server's answer"),
        response_model=None,
    )(shadowed)

    @app.post(
        "/models/{name}/feedback",
        summary="Actual values for earlier predictions",
        response_model=FeedbackAnswer,
        responses=FEEDBACK_ERRORS,
    )
    async def feedback(body: FeedbackRequest, name: str = model_name) -> FeedbackAnswer | Response:
        model = gateway.models.get(name)
        if model is None:
            gateway.metrics.requests.labels("unknown", "", "feedback", "404").inc()
            message = f"unknown model {name!r}; the models are: {', '.join(known)}"
            return JSONResponse(error_body(404, message), 404)
        if len(body.feedback) > settings.max_rows:
            message = f"{len(body.feedback)} feedback items; at most {settings.max_rows} (GATEWAY_MAX_ROWS)"
            return JSONResponse(error_body(413, message), 413)
        return await gateway.feedback(model, body)

    @app.get(
        "/health",
        summary="200 when every model server answers and every model is loaded",
        response_model=HealthAnswer,
        responses={503: {"model": HealthAnswer, "description": "degraded: see each model's ok"}},
    )
    async def health() -> JSONResponse:
        healthy, detail = await gateway.health()
        return JSONResponse(
            {"status": "ok" if healthy else "degraded", "models": detail}, 200 if healthy else 503
        )

    @app.get("/models", summary="Served models: version, alias, run id", response_model=list[ServedModelInfo])
    async def models() -> list[dict[str, Any]]:
        return gateway.describe()

    @app.get(
        "/metrics", summary="Prometheus metrics (text exposition format)", response_class=PlainTextResponse
    )
    async def metrics() -> Response:
        if keys.required:  # published beyond loopback: Prometheus reads GATEWAY_METRICS_PORT
            message = "with API keys on, metrics are served on the internal metrics port only"
            return JSONResponse(error_body(404, message), 404)
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(FastAPI.openapi(app), settings.max_rows)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    hosts = allowed_hosts(["gateway", "gateway-listener"], settings.guard.extra_allowed_hosts)
    return ScoringFastPath(app, gateway.scoring, keys, hosts)
