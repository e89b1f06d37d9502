"""Everything the gateway learns from a request, done after the answer, in one background thread.

The request path only appends an event to a deque (atomic, no lock, no thread wake-up: waking a
thread per request costs tens of microseconds and contends for the GIL). This thread wakes every
RECORDER_TICK_S, then parses passthrough payloads, observes predictions, feeds the drift windows,
remembers invocations' predictions for feedback and hands records to the prediction log, in
request order.
"""

from __future__ import annotations

import json
import logging
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
from services.gateway.validation import Column, records_from_payload, validate_records

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Observation:
    """One answered request: its records, predictions and ids (predict), or the raw bodies to parse
    here (invocations, whose rows get the ids `<base_id>-<row>`)."""

    model: str
    version: str
    ts: float
    latency_ms: float
    request_ids: list[str] | None = None
    records: list[Any] | None = None
    predictions: list[Any] | None = None
    raw_request: bytes | None = None
    raw_response: bytes | None = None
    base_id: str = ""


@dataclass(frozen=True)
class ModelLoaded:
    """A (new) version is served: reset its drift window."""

    model: str
    version: str
    profile: Mapping[str, Any] | None
    columns: tuple[Column, ...] | None


@dataclass(frozen=True)
class FeedbackReceived:
    items: list[Feedback]


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
        self._stopping = threading.Event()
        self._windows: dict[str, DriftWindow] = {}
        self._columns: dict[str, tuple[Column, ...] | None] = {}
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self.put = self._inbox.append  # the request path's only call

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
            for item in event.items:
                self._log.add(item)

    def _model_loaded(self, event: ModelLoaded) -> None:
        s = self._settings
        old = self._windows.get(event.model)
        if old is not None:
            old.clear_gauges()
        self._columns[event.model] = event.columns
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
        if records is None:  # invocations: parse the passthrough bodies now
            records, predictions = self._parse(event)
            if records is None:
                return
            request_ids = [f"{event.base_id}-{i}" for i in range(len(records))]
            self._remembered.add(event.model, request_ids, predictions or [])
        predictions = predictions or []
        values = numeric(predictions)
        histogram = self._metrics.prediction.labels(event.model)
        for value in values:
            histogram.observe(value)
        window = self._windows.get(event.model)
        if window is not None and window.version == event.version:
            window.add(records, values)
        if self._log is not None and request_ids is not None:
            for i, record in enumerate(records):
                prediction = predictions[i] if i < len(predictions) else None
                self._log.add(
                    Prediction(
                        event.ts,
                        request_ids[i],
                        event.model,
                        event.version,
                        record,
                        prediction if type(prediction) is float or type(prediction) is int else None,
                        event.latency_ms,
                    )
                )

    def _parse(self, event: Observation) -> tuple[list[Any] | None, list[Any] | None]:
        """Records and predictions of a dataframe_records / dataframe_split exchange, else (None, None)."""
        try:
            records = records_from_payload(json.loads(event.raw_request or b""))
            answer = json.loads(event.raw_response or b"")
        except (ValueError, UnicodeDecodeError):
            return None, None
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if records is None or not isinstance(predictions, list):
            return None, None
        if validate_records(records, self._columns.get(event.model)):
            return None, None  # the model accepted what the signature does not describe: skip it
        return records, predictions
