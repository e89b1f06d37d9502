"""Everything the gateway learns from a request, done after the answer, in one background thread.

The request path only appends an event to a deque (atomic, no lock, no thread wake-up: waking a
thread per request costs tens of microseconds and contends for the GIL). The deque is bounded
(GATEWAY_RECORDER_INBOX_MAX): when the thread falls behind, new events are dropped and counted
(`gateway_recorder_dropped_total`), never queued without limit. This thread wakes every
RECORDER_TICK_S, then parses passthrough answers, observes predictions, feeds the drift windows
(at most DRIFT_MAX_ROWS_PER_REQUEST rows of each request, sampled), remembers invocations'
predictions for feedback and hands records to the prediction log, in request order.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.gateway import Settings
from services.gateway.drift_window import DriftWindow
from services.gateway.feedback import RememberedPredictions
from services.gateway.metrics import GatewayMetrics
from services.gateway.predlog import Feedback, Prediction, PredictionLog

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Observation:
    """One answered request: its (validated) records, with their predictions and ids (predict), or
    the raw answer to parse here (invocations, whose rows get the ids `<base_id>-<row>`)."""

    model: str
    version: str
    ts: float
    latency_ms: float
    records: list[Any]
    request_ids: list[str] | None = None
    predictions: list[Any] | None = None
    raw_response: bytes | None = None
    base_id: str = ""
    reserved: int = 0  # prediction-log rows admitted for this request (predlog.PredictionLog.refusal)


@dataclass(frozen=True)
class ModelLoaded:
    """A (new) version is served: reset its drift window."""

    model: str
    version: str
    profile: Mapping[str, Any] | None


@dataclass(frozen=True)
class FeedbackReceived:
    items: list[Feedback]
    reserved: int = 0


Event = Observation | ModelLoaded | FeedbackReceived
RECORDER_TICK_S = 0.05


def numeric(values: list[Any]) -> list[float]:
    """The plain numbers among `values` (bool excluded)."""
    return [float(v) for v in values if type(v) is float or type(v) is int]


class Recorder:
    """The background consumer of request events."""

    def __init__(
        self,
        settings: Settings,
        metrics: GatewayMetrics,
        remembered: RememberedPredictions,
        prediction_log: PredictionLog | None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._remembered = remembered
        self._log = prediction_log
        self._inbox: deque[Event] = deque()
        self._max = settings.recorder_inbox_max
        self._dropped = metrics.recorder_dropped
        self._sample = random.Random().sample
        self._stopping = threading.Event()
        self._windows: dict[str, DriftWindow] = {}
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        metrics.recorder_queued.set_function(lambda: len(self._inbox))

    def put(self, event: Observation | FeedbackReceived) -> None:
        """Queue an event of the request path; dropped (and counted) when the inbox is full."""
        inbox = self._inbox
        if len(inbox) >= self._max and not (
            event.reserved and self._log is not None
        ):  # admitted rows are bounded by admission
            self._dropped.inc()
            return
        inbox.append(event)

    def model_loaded(self, event: ModelLoaded) -> None:
        """Queue a version change (never dropped: the drift window must follow the served version)."""
        self._inbox.append(event)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Process what is queued, then stop."""
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        inbox = self._inbox
        while True:
            stopping = self._stopping.wait(RECORDER_TICK_S)
            while inbox:
                event = inbox.popleft()
                try:
                    self._handle(event)
                except Exception:  # a bad event must not stop monitoring
                    log.exception("recorder: cannot process %s", type(event).__name__)
                    if self._log is not None and not isinstance(event, ModelLoaded) and event.reserved:
                        self._log.release(event.reserved)
            try:
                for window in self._windows.values():  # reports held back by DRIFT_MIN_INTERVAL_S
                    window.publish_if_due()
            except Exception:
                log.exception("recorder: drift report failed")
            if stopping:
                return

    def _handle(self, event: Event) -> None:
        if isinstance(event, Observation):
            self._observe(event)
        elif isinstance(event, ModelLoaded):
            self._model_loaded(event)
        elif self._log is not None:
            self._log.add(list(event.items), event.reserved)

    def _model_loaded(self, event: ModelLoaded) -> None:
        s = self._settings
        old = self._windows.get(event.model)
        if old is not None:
            old.clear_gauges()
        self._windows[event.model] = DriftWindow(
            event.model,
            event.version,
            event.profile,
            self._metrics,
            size=s.drift_window,
            min_rows=s.drift_min_rows,
            every=s.drift_every,
            min_interval_s=s.drift_min_interval_s,
            psi_threshold=s.drift_psi_threshold,
            dataset_share=s.dataset_drift_share,
        )

    def _observe(self, event: Observation) -> None:
        records, predictions, request_ids = event.records, event.predictions, event.request_ids
        if predictions is None:  # invocations: parse the passthrough answer now
            predictions = self._parse(event.raw_response)
            if predictions is None:
                if self._log is not None:
                    self._log.release(event.reserved)
                return
            request_ids = [f"{event.base_id}-{i}" for i in range(len(records))]
            self._remembered.add(event.model, request_ids, predictions)
        histogram = self._metrics.prediction.labels(event.model)
        for value in numeric(predictions):
            histogram.observe(value)
        window = self._windows.get(event.model)
        if window is not None and window.version == event.version:
            rows, kept = self._for_window(records, predictions)
            window.add(rows, numeric(kept))
        if self._log is not None:
            items: list[Feedback | Prediction] = []
            for i, record in enumerate(records if request_ids is not None else ()):
                prediction = predictions[i] if i < len(predictions) else None
                items.append(
                    Prediction(
                        event.ts,
                        request_ids[i],  # type: ignore[index]
                        event.model,
                        event.version,
                        record,
                        prediction if type(prediction) is float or type(prediction) is int else None,
                        event.latency_ms,
                    )
                )
            self._log.add(items, event.reserved)

    def _for_window(self, records: list[Any], predictions: list[Any]) -> tuple[list[Any], list[Any]]:
        """The rows (and their predictions) of one request that enter the drift window: all of them,
        or a uniform sample of DRIFT_MAX_ROWS_PER_REQUEST, so that one big batch cannot fill it."""
        cap = self._settings.drift_max_rows_per_request
        if len(records) <= cap:
            return records, predictions
        picked = sorted(self._sample(range(len(records)), cap))
        return [records[i] for i in picked], [predictions[i] for i in picked if i < len(predictions)]

    @staticmethod
    def _parse(raw_response: bytes | None) -> list[Any] | None:
        """The predictions of a model server's answer, or None when it has none."""
        try:
            answer = json.loads(raw_response or b"")
        except (ValueError, UnicodeDecodeError):
            return None
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        return predictions if isinstance(predictions, list) else None
