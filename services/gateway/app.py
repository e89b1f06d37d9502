"""The gateway's HTTP API (FastAPI; OpenAPI docs at /docs) and the state behind it.

`create_app(settings)` wires the parts: the registry poller, the pooled upstream connections, the
recorder thread (drift, prediction log) and the scoring request path (`scoring.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from services.gateway import Settings
from services.gateway.feedback import LiveQuality, RememberedPredictions
from services.gateway.metrics import GatewayMetrics
from services.gateway.predlog import Feedback, PredictionLog
from services.gateway.recorder import FeedbackReceived, ModelLoaded, Recorder
from services.gateway.registry import RegistryPoller, ServedModel, ServedVersion
from services.gateway.scoring import JSON, Scoring, ScoringFastPath
from services.gateway.upstream import Upstreams

log = logging.getLogger(__name__)


class FeedbackItem(BaseModel):
    request_id: str = Field(description="an id from a predict answer's request_ids")
    actual: float = Field(description="the observed value of the model's target")


class FeedbackRequest(BaseModel):
    feedback: list[FeedbackItem]


class FeedbackAnswer(BaseModel):
    accepted: int
    unknown: list[str] = Field(description="request ids the gateway does not remember (or already has)")


_RECORD = {
    "type": "object",
    "additionalProperties": True,
    "example": {"distance_km": 820.5, "protocol": "tcp"},
}
PREDICT_DOCS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["records"],
                    "properties": {
                        "records": {
                            "oneOf": [{"type": "array", "items": _RECORD}, _RECORD],
                            "description": "feature records (a single object is accepted too)",
                        }
                    },
                }
            }
        },
    }
}
INVOCATIONS_DOCS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "MLflow scoring protocol: dataframe_split, dataframe_records, inputs or instances",
        "content": {JSON: {"schema": {"type": "object"}}, "text/csv": {"schema": {"type": "string"}}},
    }
}
SCORING_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown model (the answer lists the known ones)"},
    502: {"description": "the model server failed (no stack trace is passed on)"},
    503: {"description": "the model server is unavailable, or no version is loaded yet"},
    504: {"description": "the model server timed out"},
}


class Gateway:
    """Everything one gateway process holds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.models: dict[str, ServedModel] = {
            name: ServedModel(name, url, self.metrics.for_model(name), LiveQuality(settings.feedback_window))
            for name, url in settings.upstreams().items()
        }
        self.upstreams = Upstreams(
            settings.upstream_timeout_s, settings.health_cache_s, settings.upstream_concurrency
        )
        self.remembered = RememberedPredictions(settings.remembered_max)
        self.prediction_log = (
            PredictionLog(
                settings.monitoring_db_uri,
                self.metrics,
                settings.log_batch_size,
                settings.log_flush_s,
                settings.log_buffer_max,
            )
            if settings.monitoring_db_uri
            else None
        )
        self.recorder = Recorder(settings, self.metrics, self.remembered, self.prediction_log)
        self.scoring = Scoring(
            self.models, settings.alias, self.upstreams, self.metrics, self.remembered, self.recorder
        )
        self.poller = RegistryPoller(
            settings.tracking_uri, settings.alias, self.models, settings.refresh_s, self._loaded
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

    async def stop(self) -> None:
        """Stop polling, finish queued work, flush the prediction log."""
        self.poller.stop()
        await self.upstreams.close()
        self.recorder.stop()
        if self.prediction_log is not None:
            self.prediction_log.stop()
        log.info("gateway stopped")

    def _loaded(self, model: ServedModel, previous: ServedVersion | None, loaded: ServedVersion) -> None:
        """Registry thread: `model` now serves `loaded`."""
        info, alias = self.metrics.model_info, self.settings.alias
        if previous is not None:
            with suppress(KeyError):
                info.remove(model.name, previous.version, alias, previous.run_id)
        info.labels(model.name, loaded.version, alias, loaded.run_id).set(1)
        self.recorder.put(ModelLoaded(model.name, loaded.version, loaded.profile, loaded.columns))

    def feedback(self, model: ServedModel, body: FeedbackRequest) -> FeedbackAnswer:
        """Join actual values with remembered predictions; update live quality and the log."""
        started = time.perf_counter()
        unknown: list[str] = []
        joined: list[Feedback] = []
        now = time.time()
        for item in body.feedback:
            prediction = self.remembered.pop(model.name, item.request_id)
            if prediction is None:
                unknown.append(item.request_id)
                continue
            model.quality.add(prediction, item.actual)
            joined.append(Feedback(now, item.request_id, item.actual))
        if joined:
            m, name = self.metrics, model.name
            m.feedback.labels(name).inc(len(joined))
            mae, rmse, r2 = model.quality.scores()
            m.live_mae.labels(name).set(mae)
            m.live_rmse.labels(name).set(rmse)
            if r2 is not None:
                m.live_r2.labels(name).set(r2)
            self.recorder.put(FeedbackReceived(joined))
        current = model.current
        model.metrics.duration_feedback.observe(time.perf_counter() - started)
        model.metrics.count(current.version if current else "", "feedback", 200)
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
        """The served models: version, alias, run id, upstream, signature columns, profile."""
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
                    "reference_profile": bool(current and current.profile),
                }
            )
        return served


def create_app(settings: Settings) -> ScoringFastPath:
    """The gateway: the FastAPI app (its lifespan starts and stops the background work) behind the
    scoring fast path, which takes the two scoring routes before FastAPI's middleware stack."""
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(
        title="Prediction gateway",
        summary="Validated predictions, MLflow scoring passthrough, feedback and monitoring.",
        version="1",
        lifespan=lifespan,
    )
    app.state.gateway = gateway

    @app.post(
        "/models/{name}/predict",
        summary="Predict for feature records, checked against the served version's signature",
        openapi_extra=PREDICT_DOCS,
        responses={
            200: {"description": "model, version, predictions and one request id per record"},
            422: {"description": "problems: [{record, field, problem}]"},
            **SCORING_ERRORS,
        },
    )
    async def predict(name: str, request: Request) -> Response:
        started = time.perf_counter()
        body = await request.body()
        return (await gateway.scoring.handle("predict", name, body, None, started)).response()

    @app.post(
        "/models/{name}/invocations",
        summary="MLflow scoring protocol, passed through to the model server (monitored)",
        description="The answer's X-Request-ID header gives the rows of a dataframe_records or "
        "dataframe_split request the feedback ids `<X-Request-ID>-<row>`.",
        openapi_extra=INVOCATIONS_DOCS,
        responses=SCORING_ERRORS,
    )
    async def invocations(name: str, request: Request) -> Response:
        started = time.perf_counter()
        body, content_type = await request.body(), request.headers.get("content-type")
        return (await gateway.scoring.handle("invocations", name, body, content_type, started)).response()

    @app.post("/models/{name}/feedback", summary="Actual values for earlier predictions", response_model=None)
    async def feedback(name: str, body: FeedbackRequest) -> FeedbackAnswer | Response:
        model = gateway.models.get(name)
        if model is None:
            gateway.metrics.requests.labels("unknown", "", "feedback", "404").inc()
            known = sorted(gateway.models)
            return JSONResponse({"message": f"unknown model {name!r}", "models": known}, 404)
        return gateway.feedback(model, body)

    @app.get("/health", summary="200 when every model server answers and every model is loaded")
    async def health() -> JSONResponse:
        healthy, detail = await gateway.health()
        return JSONResponse(
            {"status": "ok" if healthy else "degraded", "models": detail}, 200 if healthy else 503
        )

    @app.get("/models", summary="Served models: version, alias, run id")
    async def models() -> list[dict[str, Any]]:
        return gateway.describe()

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return ScoringFastPath(app, gateway.scoring)
