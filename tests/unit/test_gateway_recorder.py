"""The gateway's recorder thread: its bounded inbox, the per-request cap on drift rows, passthrough
answers, and the prediction log it feeds (real metrics, real reference profiles)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from contracts import drift, synthetic
from contracts.schema import FEATURE_NAMES
from services.gateway import Settings
from services.gateway.feedback import RememberedPredictions
from services.gateway.metrics import GatewayMetrics
from services.gateway.predlog import Prediction
from services.gateway.recorder import FeedbackReceived, ModelLoaded, Observation, Recorder
from tests.gateway_support import formula, records

MODEL = "latency-predictor"


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    reference = synthetic.generate(3000, seed=1)[list(FEATURE_NAMES)]
    return drift.build_profile(reference, [formula(row) for row in reference.to_dict(orient="records")])


def settings(**env: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        GATEWAY_MODELS=f"{MODEL}=http://127.0.0.1:1",
        MLFLOW_TRACKING_URI="http://127.0.0.1:1",
        DRIFT_WINDOW="500",
        DRIFT_MIN_ROWS="100",
        DRIFT_EVERY="50",
        DRIFT_MIN_INTERVAL_S="0",
        **env,
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


def test_the_inbox_is_bounded_and_drops_are_counted(profile: dict[str, Any]) -> None:
    metrics = GatewayMetrics()
    recorder = Recorder(settings(GATEWAY_RECORDER_INBOX_MAX="3"), metrics, RememberedPredictions(10), None)
    recorder.model_loaded(ModelLoaded(MODEL, "1", profile))
    for _ in range(4):
        recorder.put(observation(records(1)))
    assert value(metrics, "gateway_recorder_queued") == 3  # the version change and two requests
    assert value(metrics, "gateway_recorder_dropped_total") == 2
    recorder.model_loaded(ModelLoaded(MODEL, "2", profile))  # version changes are never dropped
    assert value(metrics, "gateway_recorder_queued") == 4
    drain(recorder)
    assert value(metrics, "gateway_recorder_queued") == 0
    assert value(metrics, "gateway_prediction_value_count", model=MODEL) == 2


def test_one_huge_request_no_longer_flips_dataset_drift(profile: dict[str, Any]) -> None:
    """Issue 8: about 31k identical rows from one caller fired the drift alerts by themselves."""
    results = {}
    for cap in ("20", "1000000"):  # the default, and no cap at all (what it was)
        metrics = GatewayMetrics()
        recorder = Recorder(
            settings(DRIFT_MAX_ROWS_PER_REQUEST=cap), metrics, RememberedPredictions(10), None
        )
        recorder.model_loaded(ModelLoaded(MODEL, "1", profile))
        for seed in range(100):  # normal traffic: a full window from many small requests
            recorder.put(observation(records(5, seed=seed)))
        same = records(1, seed=500, shift=1.0)[0]
        recorder.put(observation([same] * 31_000))
        drain(recorder)
        results[cap] = (
            value(metrics, "gateway_dataset_drift", model=MODEL),
            value(metrics, "gateway_drift_window_size", model=MODEL),
        )
    assert results["20"] == (0, 500)  # 20 of the 31,000 rows in a window of 500: no drift
    assert results["1000000"] == (1, 500)  # uncapped, the one request is the whole window


def test_requests_under_the_cap_enter_whole_and_bigger_ones_are_sampled(profile: dict[str, Any]) -> None:
    metrics = GatewayMetrics()
    recorder = Recorder(settings(DRIFT_MAX_ROWS_PER_REQUEST="7"), metrics, RememberedPredictions(10), None)
    recorder.model_loaded(ModelLoaded(MODEL, "1", profile))
    recorder.put(observation(records(7)))
    recorder.put(observation(records(50, seed=4)))
    drain(recorder)
    assert value(metrics, "gateway_drift_window_size", model=MODEL) == 14
    assert value(metrics, "gateway_prediction_value_count", model=MODEL) == 57  # every prediction counts


def test_passthrough_answers_are_parsed_remembered_and_logged(profile: dict[str, Any]) -> None:
    metrics, remembered, log = GatewayMetrics(), RememberedPredictions(100), Log()
    recorder = Recorder(settings(), metrics, remembered, log)  # type: ignore[arg-type]
    recorder.model_loaded(ModelLoaded(MODEL, "1", profile))
    rows = records(3)

    def base(**changes: Any) -> Observation:  # a passthrough: rows and the raw answer
        return observation(rows, request_ids=None, predictions=None, **changes)

    recorder.put(base(raw_response=b'{"predictions": [1.5, 2.5, "x"]}', base_id="abc"))
    recorder.put(base(raw_response=b"not json", base_id="bad"))
    recorder.put(base(raw_response=b'{"answer": 1}', base_id="none"))
    recorder.put(FeedbackReceived([]))
    drain(recorder)
    assert remembered.pop(MODEL, "abc-0") == 1.5 and remembered.pop(MODEL, "abc-1") == 2.5
    assert remembered.pop(MODEL, "abc-2") is None  # not a number: never remembered
    logged = [item for item in log.items if isinstance(item, Prediction)]
    assert [(p.request_id, p.prediction, p.features) for p in logged] == [
        ("abc-0", 1.5, rows[0]),
        ("abc-1", 2.5, rows[1]),
        ("abc-2", None, rows[2]),
    ]
    assert value(metrics, "gateway_prediction_value_count", model=MODEL) == 2


def test_rows_of_a_version_no_longer_served_stay_out_of_the_window(profile: dict[str, Any]) -> None:
    metrics = GatewayMetrics()
    recorder = Recorder(settings(), metrics, RememberedPredictions(10), None)
    recorder.model_loaded(ModelLoaded(MODEL, "2", profile))
    recorder.put(observation(records(5)))  # answered by version 1 during the rollout
    recorder.put(observation(records(5), version="2"))
    drain(recorder)
    assert value(metrics, "gateway_drift_window_size", model=MODEL) == 5
