"""The state one gateway process holds, and what its routes ask of it.

`Gateway(settings)` wires the parts: the registry poller, the pooled upstream connections and the
batching in front of them, the recorder thread (prediction log), feedback matched in the log
(`feedback.py`) and the scoring request path (`scoring.py`). It keeps nothing another replica would
need. `create_app` (app.py) keeps it in `app.state.gateway`; the routes (routes/) read it there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from typing import Any

from fastapi.responses import JSONResponse

from contracts.errors import error_body
from services.gateway import Settings
from services.gateway.batching import build_batchers
from services.gateway.feedback import FeedbackMatcher, LogUnavailable
from services.gateway.metrics import GatewayMetrics
from services.gateway.openapi import FeedbackAnswer, FeedbackRequest
from services.gateway.predlog import Feedback, Prediction, PredictionLog
from services.gateway.recorder import Recorder
from services.gateway.registry import RegistryPoller, ServedModel, ServedVersion
from services.gateway.scoring import Scoring
from services.gateway.upstream import Upstreams

log = logging.getLogger(__name__)


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
