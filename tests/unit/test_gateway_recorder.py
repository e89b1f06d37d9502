"""The gateway's recorder thread: its bounded inbox, passthrough answers, and the prediction log it
feeds (real metrics). It keeps nothing between events: drift is the monitor's."""

from __future__ import annotations

import time
from typing import Any

from services.gateway import Settings
from services.gateway.metrics import GatewayMetrics
from services.gateway.predlog import Prediction
from services.gateway.recorder import Observation, Recorder
from tests.gateway_support import formula, records

MODEL = "latency-predictor"


def settings(**env: str) -> Settings:
    return Settings.from_env(
        dict(
            GATEWAY_MODELS=f"{MODEL}=http://127.0.0.1:1",
            MLFLOW_TRACKING_URI="http://127.0.0.1:1",
            **env,
        )
    )


class Log:
    """Stands in for the prediction log's queue (PredictionLog.add has the same signature)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.released = 0

    def add(self, items: list[Any], reserved: int) -> None:
        self.items.extend(items)
        self.released += reserved

    def release(self, rows: int) -> None:
        self.released += rows


def observation(rows: list[dict[str, Any]], **changes: Any) -> Observation:
    fields: dict[str, Any] = {
        "model": MODEL,
        "version": "1",
        "ts": time.time(),
        "latency_ms": 2.0,
        "records": rows,
        "request_ids": [f"id-{i}" for i in range(len(rows))],
        "predictions": [formula(row) for row in rows],
    }
    return Observation(**{**fields, **changes})


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def drain(recorder: Recorder) -> None:
    """Run the recorder thread until its inbox is empty, then stop it."""
    recorder.start()
    recorder.stop()


def test_the_inbox_is_bounded_and_drops_are_counted() -> None:
    metrics = GatewayMetrics()
    recorder = Recorder(settings(GATEWAY_RECORDER_INBOX_MAX="3"), metrics, None)
    for _ in range(5):
        recorder.put(observation(records(1)))
    assert value(metrics, "gateway_recorder_queued") == 3
    assert value(metrics, "gateway_recorder_dropped_total") == 2
    drain(recorder)
    assert value(metrics, "gateway_recorder_queued") == 0
    assert value(metrics, "gateway_prediction_value_count", model=MODEL) == 3


def test_admitted_requests_are_never_dropped() -> None:
    """Rows that reserved room in the prediction log are bounded by that admission, not the inbox."""
    metrics, log = GatewayMetrics(), Log()
    recorder = Recorder(settings(GATEWAY_RECORDER_INBOX_MAX="1"), metrics, log)  # type: ignore[arg-type]
    for i in range(3):
        recorder.put(observation(records(1), request_ids=[f"id-{i}"], reserved=1))
    drain(recorder)
    assert value(metrics, "gateway_recorder_dropped_total") == 0
    assert [item.request_id for item in log.items] == ["id-0", "id-1", "id-2"] and log.released == 3


def test_passthrough_answers_are_parsed_and_logged() -> None:
    metrics, log = GatewayMetrics(), Log()
    recorder = Recorder(settings(), metrics, log)  # type: ignore[arg-type]
    rows = records(3)

    def base(**changes: Any) -> Observation:  # a passthrough: rows and the raw answer
        return observation(rows, request_ids=None, predictions=None, reserved=3, **changes)

    recorder.put(base(raw_response=b'{"predictions": [1.5, 2.5, "x"]}', base_id="abc"))
    recorder.put(base(raw_response=b"not json", base_id="bad"))
    recorder.put(base(raw_response=b'{"answer": 1}', base_id="none"))
    drain(recorder)
    logged = [item for item in log.items if isinstance(item, Prediction)]
    assert [(p.request_id, p.prediction, p.features) for p in logged] == [
        ("abc-0", 1.5, rows[0]),
        ("abc-1", 2.5, rows[1]),
        ("abc-2", None, rows[2]),  # not a number: logged without a prediction
    ]
    assert log.released == 9  # the two answers without predictions gave their rows back
    assert value(metrics, "gateway_prediction_value_count", model=MODEL) == 2
