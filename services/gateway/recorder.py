"""Everything the gateway learns from a request, done after the answer, in one background thread.

The request path only appends an event to a deque (atomic, no lock, no thread wake-up: waking a
thread per request costs tens of microseconds and contends for the GIL). The deque is bounded
(GATEWAY_RECORDER_INBOX_MAX): when the thread falls behind, new events are dropped and counted
(`gateway_recorder_dropped_total`), never queued without limit. This thread wakes every
RECORDER_TICK_S, then parses passthrough answers, observes predictions and hands records to the
prediction log, in request order. It holds nothing between events: drift and live quality are the
monitor's, computed from the prediction log of every replica (services/monitor).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from services.gateway import Settings
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
        prediction_log: PredictionLog | None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._log = prediction_log
        self._inbox: deque[Observation] = deque()
        self._max = settings.recorder_inbox_max
        self._dropped = metrics.recorder_dropped
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        metrics.recorder_queued.set_function(lambda: len(self._inbox))

    def put(self, event: Observation) -> None:
        """Queue an event of the request path; dropped (and counted) when the inbox is full."""
        inbox = self._inbox
        if len(inbox) >= self._max and not (
            event.reserved and self._log is not None
        ):  # admitted rows are bounded by admission
            self._dropped.inc()
            return
        inbox.append(event)

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
                    self._observe(event)
                except Exception:  # a bad event must not stop monitoring
                    log.exception("recorder: cannot process %s", type(event).__name__)
                    if self._log is not None and event.reserved:
                        self._log.release(event.reserved)
            if stopping:
                return

    def _observe(self, event: Observation) -> None:
        records, predictions, request_ids = event.records, event.predictions, event.request_ids
        if predictions is None:  # invocations: parse the passthrough answer now
            predictions = self._parse(event.raw_response)
            if predictions is None:
                if self._log is not None:
                    self._log.release(event.reserved)
                return
            request_ids = [f"{event.base_id}-{i}" for i in range(len(records))]
        histogram = self._metrics.prediction.labels(event.model)
        for value in numeric(predictions):
            histogram.observe(value)
        if self._log is not None:
            items: list[Prediction | Feedback] = []
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

    @staticmethod
    def _parse(raw_response: bytes | None) -> list[Any] | None:
        """The predictions of a model server's answer, or None when it has none."""
        try:
            answer = json.loads(raw_response or b"")
        except (ValueError, UnicodeDecodeError):
            return None
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        return predictions if isinstance(predictions, list) else None
