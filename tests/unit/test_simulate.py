"""The traffic simulator's logic without a network: payloads, feedback scheduling, pacing, stopping."""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

import pytest

from contracts.schema import FEATURE_NAMES
from services.simulate import traffic
from services.simulate.traffic import Batch, FeedbackQueue, Options, RowSource, Simulator, Stats
from tests.conftest import free_port

MODELS = {"latency-predictor": "latency_ms", "bandwidth-efficiency-predictor": "bandwidth_efficiency"}


class FakeGateway:
    """Answers predict with one request id per row (or a given status) and records every call."""

    def __init__(self, status: int = 200, with_ids: bool = True) -> None:
        self.status, self.with_ids = status, with_ids
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.ids = itertools.count()
        self.lock = threading.Lock()

    def __call__(self, url: str, body: dict[str, Any]) -> traffic.Response:
        with self.lock:
            self.calls.append((url, json.loads(json.dumps(body))))  # must be JSON as sent
            if url.endswith("/predict"):
                ids = [f"r{next(self.ids)}" for _ in body["records"]]
                answer = {"predictions": [1.0] * len(ids), **({"request_ids": ids} if self.with_ids else {})}
                return self.status, answer, 0.002
            return 200, {"accepted": len(body["feedback"])}, 0.001

    def predicts(self) -> list[tuple[str, dict[str, Any]]]:
        return [c for c in self.calls if c[0].endswith("/predict")]

    def feedback(self) -> list[tuple[str, dict[str, Any]]]:
        return [c for c in self.calls if c[0].endswith("/feedback")]


def simulator(gateway: FakeGateway, lines: list[str] | None = None, **options: Any) -> Simulator:
    defaults: dict[str, Any] = {
        "gateway": "http://gw:8000/",
        "rate": 500.0,
        "requests": 20,
        "feedback_delay": 0.0,
    }
    out = lines.append if lines is not None else (lambda _line: None)
    return Simulator(Options(**{**defaults, **options}), post=gateway, out=out, models=MODELS)


def test_batch_holds_the_schema_features_only_and_keeps_the_true_values() -> None:
    rows = RowSource(seed=1).take(4)
    batch = traffic.build_batch(rows, "latency-predictor", "latency_ms")
    assert [list(r) for r in batch.records] == [list(FEATURE_NAMES)] * 4
    assert batch.actuals == [row["latency_ms"] for row in rows]
    payload = json.loads(json.dumps(batch.payload()))  # serialisable as it is
    assert payload == {"records": batch.records}


def test_rows_are_seeded_endless_and_drift_shifts_them() -> None:
    a, b = RowSource(seed=3, chunk=3), RowSource(seed=3, chunk=3)
    first = a.take(5) + a.take(5)  # crosses chunk boundaries
    assert first == b.take(10)
    assert len({json.dumps(r, sort_keys=True) for r in first}) == 10
    assert RowSource(seed=4).take(5) != RowSource(seed=3).take(5)
    calm = [r["link_utilization"] for r in RowSource(seed=5).take(1000)]
    drifted = [r["link_utilization"] for r in RowSource(seed=5, drift=1.0).take(1000)]
    assert sum(drifted) / 1000 > sum(calm) / 1000 + 0.1


def test_busy_links_move_link_utilisation_only() -> None:
    """The harmful shift with little feature drift: hotter links, every other feature as it was."""
    calm, busy = RowSource(seed=5).take(500), RowSource(seed=5, busy_links=1.0).take(500)
    assert sum(r["link_utilization"] for r in busy) > sum(r["link_utilization"] for r in calm) + 0.15 * 500
    untouched = [name for name in FEATURE_NAMES if name != "link_utilization"]
    assert [[r[n] for n in untouched] for r in busy] == [[r[n] for n in untouched] for r in calm]
    assert sum(r["latency_ms"] for r in busy) > sum(r["latency_ms"] for r in calm)


def test_batches_alternate_models_with_one_to_five_rows() -> None:
    sim = simulator(FakeGateway())
    batches = [sim.next_batch(i) for i in range(200)]
    assert [b.model for b in batches[:4]] == list(MODELS) * 2
    assert {len(b.records) for b in batches} == {1, 2, 3, 4, 5}
    for b in batches:
        assert len(b.actuals) == len(b.records)


def test_feedback_comes_due_after_the_delay_grouped_by_model() -> None:
    queue = FeedbackQueue(delay=5.0, share=1.0)
    assert queue.add(100.0, "m1", ["a", "b"], [1.0, 2.0]) == 2
    queue.add(101.0, "m2", ["c"], [3.0])
    assert queue.pop_due(104.9) == {}
    assert queue.next_due() == 105.0
    assert queue.pop_due(105.0) == {"m1": [("a", 1.0), ("b", 2.0)]}
    assert len(queue) == 1
    assert queue.pop_due(200.0) == {"m2": [("c", 3.0)]}
    assert queue.pop_due(300.0) == {} and queue.next_due() is None


def test_feedback_share_picks_that_share_of_rows() -> None:
    ids = [str(i) for i in range(4000)]
    assert FeedbackQueue(0, 0.0).add(0, "m", ids, [0.0] * 4000) == 0
    assert 0.45 < FeedbackQueue(0, 0.5, seed=1).add(0, "m", ids, [0.0] * 4000) / 4000 < 0.55
    with pytest.raises(ValueError, match="2 request ids for 1 rows"):
        FeedbackQueue(0, 1.0).add(0, "m", ["a", "b"], [1.0])
    with pytest.raises(ValueError):
        FeedbackQueue(0, 1.5)


def test_run_sends_the_requests_then_the_true_value_of_every_row() -> None:
    gateway = FakeGateway()
    sim = simulator(gateway, requests=20)
    stats = sim.run()
    predicts = gateway.predicts()
    assert len(predicts) == stats.sent == 20 and stats.errors == 0
    assert {url for url, _ in predicts} == {f"http://gw:8000/models/{m}/predict" for m in MODELS}
    feedback = [item for _, body in gateway.feedback() for item in body["feedback"]]
    assert stats.feedback == len(feedback) == sum(len(body["records"]) for _, body in predicts)
    assert {f["request_id"] for f in feedback} == {f"r{i}" for i in range(len(feedback))}
    for url, body in gateway.feedback():
        model = url.split("/")[-2]
        assert model in MODELS and all(isinstance(f["actual"], float) for f in body["feedback"])


def test_feedback_carries_the_generated_target_of_its_row() -> None:
    gateway = FakeGateway()
    sim = simulator(gateway, requests=6, workers=1)  # one worker: ids follow the request order
    expected: dict[str, tuple[str, float]] = {}
    counter = itertools.count()
    original = sim.next_batch

    def remember(i: int) -> Batch:
        batch = original(i)
        for actual in batch.actuals:
            expected[f"r{next(counter)}"] = (batch.model, actual)
        return batch

    sim.next_batch = remember  # type: ignore[method-assign]
    sim.run()
    got = {
        f["request_id"]: (url.split("/")[-2], f["actual"])
        for url, b in gateway.feedback()
        for f in b["feedback"]
    }
    assert got == expected


def test_failed_requests_count_as_errors_and_get_no_feedback() -> None:
    gateway = FakeGateway(status=503)
    stats = simulator(gateway, requests=10).run()
    assert (stats.sent, stats.errors, stats.feedback) == (10, 10, 0)
    assert gateway.feedback() == []


def test_answers_without_request_ids_warn_once() -> None:
    lines: list[str] = []
    stats = simulator(FakeGateway(with_ids=False), lines, requests=10).run()
    assert stats.errors == 0 and stats.feedback == 0
    assert sum("no request_ids" in line for line in lines) == 1
    assert lines[-1].startswith("done:")


def test_stop_ends_the_run_promptly_and_drops_pending_feedback() -> None:
    gateway = FakeGateway()
    sim = simulator(gateway, rate=20.0, requests=10_000, feedback_delay=60.0)
    runner = threading.Thread(target=sim.run)
    runner.start()
    time.sleep(0.5)
    sim.stop.set()
    runner.join(timeout=5)
    assert not runner.is_alive()
    assert 3 <= sim.stats.sent < 100
    assert gateway.feedback() == []


def test_rate_paces_the_requests() -> None:
    gateway = FakeGateway()
    started = time.monotonic()
    simulator(gateway, rate=50.0, requests=26).run()
    assert 0.45 < time.monotonic() - started < 2.0  # 25 intervals of 20 ms


def test_summary_line_reports_counts_and_median_latency() -> None:
    stats = Stats()
    for seconds in (0.010, 0.020, 0.030):
        stats.request(True, seconds)
    stats.request(False, 1.0)
    stats.feedback_sent(5, True)
    line = stats.line(10.0)
    assert "sent 4" in line and "errors 1" in line and "p50 20.0 ms" in line and "feedback 5" in line
    assert "p50 - ms" in stats.line(20.0)  # a new window
    assert "p50 20.0 ms" in stats.line(30.0, final=True)


def test_arguments_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_URL", "http://gateway:8000")
    options = traffic.parse_args([])
    assert (options.gateway, options.rate, options.duration, options.drift) == (
        "http://gateway:8000",
        10,
        300,
        0,
    )
    assert (options.feedback_delay, options.feedback_share, options.requests) == (5, 1.0, None)
    assert traffic.parse_args(["--drift", "1.0", "--requests", "50"]).requests == 50
    assert (options.busy_links, traffic.parse_args(["--busy-links", "0.5"]).busy_links) == (0, 0.5)
    for bad in (["--duration", "3601"], ["--rate", "0"], ["--feedback-share", "1.5"], ["--drift", "-1"],
                ["--busy-links", "-0.5"]):  # fmt: skip
        with pytest.raises(SystemExit):
            traffic.parse_args(bad)


def test_main_refuses_an_unreachable_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    assert traffic.main(["--gateway", f"http://127.0.0.1:{free_port()}", "--requests", "1"]) == 1
    assert "does not answer" in capsys.readouterr().err
