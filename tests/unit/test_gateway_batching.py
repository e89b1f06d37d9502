"""Adaptive batching (services/gateway/batching.py).

First the Batcher itself, in an event loop, in front of a model server that is a coroutine (it
answers with `formula` per row, like the loopback scoring server, and can be held, fail or
miscount). Then the gateway app in-process in front of the real loopback scoring server, with
requests sent concurrently from threads: fewer upstream calls, the same answers as without
batching, and a row that makes the model raise failing only its own request.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pandas as pd
import pytest

from services.gateway.batching import Batcher, Reply, UpstreamMisbehaved
from services.gateway.metrics import GatewayMetrics, ModelMetrics
from services.gateway.registry import ServedVersion
from services.gateway.upstream import Response, UpstreamTimeout, UpstreamUnavailable
from services.gateway.validation import JSON, SCHEMA_COLUMNS, Columns
from tests.gateway_support import (
    Gateway,
    ScoringServer,
    formula,
    make_registry,
    records,
    rows_of,
    running,
    scoring_server,
    tracking_uri_restored,
)

URL = "http://model-server"
VERSION = "3"
# Served versions whose columns are in reverse schema order: merged calls follow the served order.
SERVED = ServedVersion("1", "run", Columns(tuple(reversed(SCHEMA_COLUMNS.columns))))
OTHER = ServedVersion("2", "run", SCHEMA_COLUMNS)


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def own(rows: list[dict[str, Any]]) -> bytes:
    """A request's own body (what goes to the model server when it is sent alone)."""
    return encode({"dataframe_records": rows})


def answer(rows: list[dict[str, Any]]) -> bytes:
    return encode({"predictions": [formula(row) for row in rows]})


class ModelServer:
    """A model server inside the event loop. Call i waits for gates[i], when there is one (`hold`);
    a row whose distance_km is `poison` makes the model fail (400, like MLflow); `miscount` drops the
    last prediction of merged answers; `fail_merged` is raised by merged calls."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[bytes] = []
        self.calls: list[list[dict[str, Any]]] = []
        self.gates: list[asyncio.Event] = []
        self.delay_s = 0.0
        self.poison: float | None = None
        self.miscount = False
        self.fail_merged: Exception | None = None
        self.in_flight = self.max_in_flight = 0
        self.version = VERSION  # the X-Model-Version of its answers

    async def post(
        self, url: str, body: bytes, content_type: str, timeout_s: float, headers: bytes
    ) -> Response:
        assert (url, content_type) == (URL, JSON)
        self.headers.append(headers)
        rows = rows_of(body, content_type)
        merged = "inputs" in json.loads(body)  # own() bodies are dataframe_records
        index = len(self.calls)
        self.bodies.append(body)
        self.calls.append(rows)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            async with asyncio.timeout(timeout_s):
                if index < len(self.gates):
                    await self.gates[index].wait()
                await asyncio.sleep(self.delay_s)
        except TimeoutError:
            raise UpstreamTimeout(f"no answer within {timeout_s:.3g} s") from None
        finally:
            self.in_flight -= 1
        if merged and self.fail_merged is not None:
            raise self.fail_merged
        if any(row["distance_km"] == self.poison for row in rows):
            return Response(
                400, encode({"error_code": "BAD_REQUEST", "message": "the model raised"}), JSON, VERSION
            )
        if merged and self.miscount:
            return Response(200, encode({"predictions": [formula(row) for row in rows][:-1]}), JSON, VERSION)
        return Response(200, answer(rows), JSON, self.version)

    def hold(self, calls: int) -> None:
        """The first `calls` calls wait until they are let go."""
        self.gates = [asyncio.Event() for _ in range(calls)]

    def let_go(self, call: int | None = None) -> None:
        """Let call `call` answer (None: every held call)."""
        for gate in self.gates if call is None else [self.gates[call]]:
            gate.set()


Scenario = Callable[[Batcher, ModelServer, ModelMetrics], Awaitable[None]]


def run(
    scenario: Scenario,
    concurrency: int = 1,
    max_rows: int = 256,
    max_wait_s: float = 0.001,
    timeout_s: float = 5,
) -> ModelMetrics:
    """Run `scenario` against a fresh Batcher and model server; the model's metrics afterwards. A
    scenario left waiting (a request nobody answers) fails after 10 s."""
    metrics = GatewayMetrics().for_model("m")

    async def main() -> None:
        server = ModelServer()
        batcher = Batcher(server.post, URL, concurrency, max_rows, max_wait_s, timeout_s)
        async with asyncio.timeout(10):
            await scenario(batcher, server, metrics)

    asyncio.run(main())
    return metrics


def send(
    batcher: Batcher,
    metrics: ModelMetrics,
    rows: list[dict[str, Any]],
    served: ServedVersion = SERVED,
    request_id: str = "r",
) -> asyncio.Task[Reply]:
    return asyncio.ensure_future(batcher.send(rows, own(rows), served, metrics, request_id))


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


async def settle() -> None:
    """Let every ready task run until it waits."""
    for _ in range(5):
        await asyncio.sleep(0)


def observed(metrics: ModelMetrics, name: str) -> tuple[float, float]:
    """(count, sum) of one of the model's histograms."""
    registry = metrics.metrics.registry
    count = registry.get_sample_value(f"{name}_count", {"model": metrics.model})
    total = registry.get_sample_value(f"{name}_sum", {"model": metrics.model})
    return count or 0.0, total or 0.0


def fallbacks(metrics: ModelMetrics) -> float:
    value = metrics.metrics.registry.get_sample_value("gateway_batch_fallbacks_total", {"model": "m"})
    return value or 0.0


def requests_of(sizes: list[int], seed: int = 20) -> list[list[dict[str, Any]]]:
    rows = records(sum(sizes), seed=seed)
    found, start = [], 0
    for size in sizes:
        found.append(rows[start : start + size])
        start += size
    return found


# -- the policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 2, 0])
def test_a_request_that_finds_the_model_server_idle_is_sent_at_once_alone(concurrency: int) -> None:
    rows = records(2, seed=21)

    async def scenario(batcher: Batcher, server: ModelServer, metrics: ModelMetrics) -> None:
        task = send(batcher, metrics, rows)
        await asyncio.sleep(0)  # one turn of the event loop: no timer, no companions awaited
        assert server.bodies == [own(rows)]
        assert await task == Reply(200, answer(rows), JSON, VERSION, None)  # the model server's own answer

    # Even a long GATEWAY_BATCH_MAX_WAIT_MS is not waited when nothing is in flight.
    metrics = run(scenario, concurrency=concurrency, max_wait_s=10.0)
    assert observed(metrics, "gateway_batch_size") == (1, 1)
    assert observed(metrics, "gateway_queue_wait_seconds") == (1, 0.0)


def test_requests_that_arrive_during_a_call_go_together_as_the_next_call_in_order() -> None:
    first, *queued = requests_of([1, 1, 3, 2, 1, 4])

    async def scenario(batcher: Batcher, server: ModelServer, metrics: ModelMetrics) -> None:
        server.hold(1)
        leading = send(batcher, metrics, first, request_id="r0")
        await until(lambda: len(server.calls) == 1)
        waiting = [send(batcher, metrics, rows, request_id=f"r{i}") for i, rows in enumerate(queued, 1)]
        await settle()
        assert len(server.calls) == 1  # the model server is busy: the others wait in the gateway
        server.let_go()
        replies = await asyncio.gather(leading, *waiting)
        assert len(server.calls) == 2
        merged = json.loads(server.bodies[1])
        assert list(merged["inputs"]) == [c.name for c in SERVED.columns]  # columnar, signature order
        assert server.calls[1] == [row for rows in queued for row in rows]
        # The model server learns which gateway requests each call carries, in row order.
        assert server.headers == [b"X-Request-ID: r0\r\n", b"X-Request-ID: r1, r2, r3, r4, r5\r\n"]
        assert replies[0] == Reply(200, answer(first), JSON, VERSION, None)
        for rows, reply in zip(queued, replies[1:], strict=True):  # split back by row counts
            assert reply == Reply(200, b"", JSON, VERSION, [formula(row) for row in rows])

    metrics = run(scenario, concurrency=1)
    assert observed(metrics, "gateway_batch_size") == (2, 1 + 5)
    count, waited = observed(metrics, "gateway_queue_wait_seconds")
    assert count == 6 and waited > 0


def test_a_call_carries_at_most_max_rows_and_a_bigger_request_goes_alone_unsplit() -> None:
    first, *queued = requests_of([1, 2, 2, 1, 3, 6, 1])

    async def scenario(batcher: Batcher, server: ModelServer, metrics: ModelMetrics) -> None:
        server.hold(1)
        leading = send(batcher, metrics, first, request_id="r0")
        await until(lambda: len(server.calls) == 1)
        waiting = [send(batcher, metrics, rows, request_id=f"r{i}") for i, rows in enumerate(queued, 1)]
        await settle()
        server.let_go()
        replies = await asyncio.gather(leading, *waiting)
        assert [len(rows) for rows in server.calls] == [1, 4, 4, 6, 1]
        assert server.bodies[3] == own(queued[4]) and server.bodies[4] == own(queued[5])
        for rows, reply in zip(queued, replies[1:], strict=True):
            assert (reply.predictions or json.loads(reply.content)["predictions"]) == [
                formula(r) for r in rows
            ]

    run(scenario, concurrency=1, max_rows=4)


def test_only_requests_checked_against_the_same_version_share_a_call() -> None:
    first, a, b, c = requests_of([1, 1, 1, 1])

    async def scenario(batcher: Batcher, server: ModelServer, metrics: ModelMetrics) -> None:
        server.hold(1)
        leading = send(batcher, metrics, first)
        await until(lambda: len(server.calls) == 1)
        waiting = [send(batcher, metrics, a), send(batcher, metrics, b, OTHER), send(batcher, metrics, c)]
        await settle()
        server.let_go()
        await asyncio.gather(leading, *waiting)
        assert server.calls == [first, a, b, c]  # in order, never regrouped

    run(scenario, concurrency=1)


def test_a_request_that_finds_a_free_slot_goes_at_once_while_another_call_is_in_flight() -> None:
    first, second = requests_of([1, 1])

    async def scenario(batcher: Batcher, server: ModelServer, metrics: ModelMetrics) -> None:
        server.hold(1)
        leading = send(batcher, metrics, first)
        await until(lambda: len(server.calls) == 1)
        task = send(batcher, metrics, second)
        await asyncio.sleep(0)  # a free worker is never kept waiting for companions
        assert server.bodies[1] == own(second)
        assert await task == Reply(200, answer(second), JSON, VERSION, None)
        server.let_go()
        await leading

    run(scenario, concurrency=2, max_wait_s=10.0)


def test_without_a_limit_an_open_batch_waits_at_most_max_wait_for_companions() -> None:
    first, a, b = requests_of([1, 1, 1])

    async def scenario(batcher: Batcher, server: ModelServer, metrics: ModelMetrics) -> None:
        server.hold(1)
        loop = asyncio.get_running_loop()
        leading = send(batcher, metrics, first)
        await until(lambda: len(server.calls) == 1)
        opened = loop.time()
        waiting = [send(batcher, metrics, a)]  # busy, but a slot is free: a batch opens
        await asyncio.sleep(0.02)
        waiting.append(send(batcher, metrics, b))  # a companion within the wait
        await until(lambda: len(server.calls) == 2)
        assert loop.time() - opened >= 0.095
        assert server.calls[1] == [a[0], b[0]]
        assert [r.predictions for r in await asyncio.gather(*waiting)] == [[formula(a[0])], [formula(b[0])]]
        server.let_go()
        await leading

    run(scenario, concurrency=0, max_wait_s=0.1)


@pytest.mark.parametrize("ends", ["filled up", "model server idle"])
def test_without_a_limit_an_open_batch_goes_when_it_fills_up_or_the_model_server_falls_idle(
    ends: str,
) -> None:
    first, a, b = requests_of([1, 1, 1])

    async def scenario(batcher: Batcher, server: ModelServer, metrics: ModelMetrics) -> None:
        server.hold(1)
        leading = send(batcher, metrics, first)
        await until(lambda: len(server.calls) == 1)
        waiting = [send(batcher, metrics, a)]
        await settle()
        if ends == "filled up":
            waiting.append(send(batcher, metrics, b))
        else:
            server.let_go()
        await until(lambda: len(server.calls) == 2, timeout_s=2)  # not the 10 s wait
        server.let_go()
        await asyncio.gather(leading, *waiting)

    run(scenario, concurrency=0, max_rows=2, max_wait_s=10.0)


def test_concurrency_is_kept_and_every_request_gets_its_own_predictions() -> None:
    batches = requests_of([1, 2, 1, 3] * 10)

    async def scenario(batcher: Batcher, server: ModelServer, metrics: ModelMetrics) -> None:
        server.delay_s = 0.005
        replies = []
        for rows in batches:  # arriving over time, not all at once
            replies.append(send(batcher, metrics, rows))
            await asyncio.sleep(0.0005)
        for rows, reply in zip(batches, await asyncio.gather(*replies), strict=True):
            predictions = reply.predictions or json.loads(reply.content)["predictions"]
            assert predictions == [formula(row) for row in rows]
        assert server.max_in_flight == 2
        assert len(server.calls) < len(batches)

    run(scenario, concurrency=2, max_wait_s=0.002)


# -- failures ---------------------------------------------------------------------------------------


def test_a_merged_answer_with_the_wrong_count_fails_every_request_of_the_call() -> None:
    first, *queued = requests_of([1, 1, 2, 1])

    async def scenario(batcher: Batcher, server: ModelServer, metrics: ModelMetrics) -> None:
        server.hold(1)
        server.miscount = True
        leading = send(batcher, metrics, first, request_id="r0")
        await until(lambda: len(server.calls) == 1)
        waiting = [send(batcher, metrics, rows, request_id=f"r{i}") for i, rows in enumerate(queued, 1)]
        await settle()
        server.let_go()
        assert (await leading).status == 200  # alone: not merged, not miscounted
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        for outcome in outcomes:
            assert isinstance(outcome, UpstreamMisbehaved)
            assert str(outcome) == "sent 3 predictions for the 4 rows of a merged call"
        assert len(server.calls) == 2  # no retry: the model server misbehaved, not the rows

    metrics = run(scenario)
    assert fallbacks(metrics) == 0


@pytest.mark.parametrize(
    "failure",
    [None, UpstreamUnavailable("connection reset"), UpstreamTimeout("no answer")],
    ids=["model error", "unreachable", "timeout"],
)
def test_a_failed_merged_call_is_retried_one_request_at_a_time(failure: Exception | None) -> None:
    first, *queued = requests_of([1, 1, 2, 1, 1])

    async def scenario(batcher: Batcher, server: ModelServer, metrics: ModelMetrics) -> None:
        server.hold(1)
        if failure is None:
            server.poison = queued[1][1]["distance_km"]  # a row that makes the model raise
        else:
            server.fail_merged = failure
        leading = send(batcher, metrics, first, request_id="r0")
        await until(lambda: len(server.calls) == 1)
        waiting = [send(batcher, metrics, rows, request_id=f"r{i}") for i, rows in enumerate(queued, 1)]
        await settle()
        server.let_go()
        replies = await asyncio.gather(leading, *waiting)
        assert server.calls == [first, [r for rows in queued for r in rows], *queued]
        for rows, reply in zip(queued, replies[1:], strict=True):  # each its own outcome
            if failure is None and rows is queued[1]:
                assert reply.status == 400 and reply.predictions is None
            else:
                assert reply == Reply(200, answer(rows), JSON, VERSION, None)

    metrics = run(scenario)
    assert fallbacks(metrics) == 1
    assert observed(metrics, "gateway_batch_size") == (1 + 1 + 4, 1 + 4 + 4)


def test_a_queued_request_waits_no_longer_than_the_upstream_timeout() -> None:
    first, second = requests_of([1, 1])

    async def scenario(batcher: Batcher, server: ModelServer, metrics: ModelMetrics) -> None:
        server.hold(2)  # a hung model server
        started = time.monotonic()
        outcomes = await asyncio.gather(
            send(batcher, metrics, first), send(batcher, metrics, second), return_exceptions=True
        )
        assert all(isinstance(outcome, UpstreamTimeout) for outcome in outcomes)
        # Both within one timeout (1 s): the queued one did not start its own after the first's
        # ended (2 s). The margin is wide for a loaded machine: this is not a speed test.
        assert time.monotonic() - started < 1.9

    run(scenario, timeout_s=1.0)


def test_a_cancelled_request_leaves_no_one_waiting() -> None:
    first, a, b, c, later = requests_of([1, 1, 1, 1, 1])

    async def scenario(batcher: Batcher, server: ModelServer, metrics: ModelMetrics) -> None:
        server.hold(2)
        leading = send(batcher, metrics, first)
        await until(lambda: len(server.calls) == 1)
        waiting = [send(batcher, metrics, rows) for rows in (a, b, c)]
        await settle()
        waiting[1].cancel()  # cancelled while queued: it leaves the queue
        server.let_go(0)
        await leading
        await until(lambda: len(server.calls) == 2)
        assert server.calls[1] == [a[0], c[0]]
        waiting[0].cancel()  # the request sending the call is cancelled (the gateway stops)
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert isinstance(outcomes[0], asyncio.CancelledError)
        assert isinstance(outcomes[1], asyncio.CancelledError)
        assert isinstance(outcomes[2], UpstreamUnavailable)  # answered, not left waiting
        reply = await send(batcher, metrics, later)  # and the slot is free again
        assert reply == Reply(200, answer(later), JSON, VERSION, None)

    run(scenario)


# -- through the gateway app, in front of the loopback scoring server --------------------------------

LATENCY = "latency-predictor"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with tracking_uri_restored():
        yield make_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture
def slow() -> Iterator[ScoringServer]:
    """A model server that takes 40 ms per call: concurrent requests queue in the gateway."""
    for server in scoring_server():
        server.delay_s = 0.04
        yield server


def at_once(gateway: Gateway, requests: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """POST every (endpoint, body) from its own thread, all released together; the answers in order."""
    answers: list[Any] = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def post(i: int) -> None:
        endpoint, body = requests[i]
        barrier.wait()
        answers[i] = gateway.post(endpoint, content=encode(body), headers={"Content-Type": JSON})

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def mixed_requests() -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(endpoint, body, rows): predict and JSON forms of invocations, 1 to 3 rows each."""
    found = []
    for i, rows in enumerate(requests_of([1, 2, 3, 1] * 5, seed=30)):
        body: dict[str, Any] = {
            0: {"records": rows},
            1: {"dataframe_records": rows},
            2: {"dataframe_split": pd.DataFrame(rows).to_dict(orient="split", index=False)},
            3: {"instances": rows},
        }[i % 4]
        found.append(("predict" if i % 4 == 0 else "invocations", body, rows))
    return found


def predictions(answer: Any) -> list[float]:
    assert answer.status_code == 200, answer.text
    return list(answer.json()["predictions"])


def test_concurrent_requests_share_calls_and_get_what_they_would_get_alone(
    registry: str, slow: ScoringServer
) -> None:
    requests = mixed_requests()
    bodies = [(endpoint, body) for endpoint, body, _ in requests]
    with running(registry, {LATENCY: slow.url}, [LATENCY], GATEWAY_BATCHING="false") as off:
        unbatched = at_once(off, bodies)
        assert len(slow.received) == len(requests)  # one call per request
        assert off.metric("gateway_batch_size_count", model=LATENCY) == 0
    sent = len(slow.received)
    with running(registry, {LATENCY: slow.url}, [LATENCY]) as on:
        batched = at_once(on, bodies)
        calls = slow.calls(sent)
        assert 1 < len(calls) < len(requests)
        assert sorted(map(str, (row for call in calls for row in call))) == sorted(
            map(str, (row for *_, rows in requests for row in rows))
        )
        assert on.metric("gateway_batch_size_count", model=LATENCY) == len(calls)
        assert on.metric("gateway_batch_size_sum", model=LATENCY) == len(requests)
        assert on.metric("gateway_queue_wait_seconds_count", model=LATENCY) == len(requests)
        for endpoint in ("predict", "invocations"):
            count = sum(e == endpoint for e, *_ in requests)
            labels = {"model": LATENCY, "version": "1", "endpoint": endpoint, "status": "200"}
            assert on.metric("gateway_requests_total", **labels) == count
        ids: list[str] = []
        for (endpoint, _, rows), alone, merged in zip(requests, unbatched, batched, strict=True):
            assert predictions(merged) == predictions(alone) == [formula(row) for row in rows]
            assert merged.headers["content-type"] == "application/json"
            if endpoint == "predict":
                assert merged.json().keys() == {"model", "version", "predictions", "request_ids"}
                ids += merged.json()["request_ids"]
            else:
                assert merged.json().keys() == {"predictions"}
                ids += [f"{merged.headers['x-request-id']}-{i}" for i in range(len(rows))]
        assert len(set(ids)) == len(ids)


def test_a_row_that_makes_the_model_raise_fails_only_its_own_request(
    registry: str, slow: ScoringServer
) -> None:
    first, *rows = records(13, seed=31)
    slow.poison = rows[5]["distance_km"]
    assert [row["distance_km"] for row in (first, *rows)].count(slow.poison) == 1
    with running(registry, {LATENCY: slow.url}, [LATENCY]) as gw:
        leading = threading.Thread(target=gw.post, args=("predict", {"records": [first]}))
        leading.start()  # the model server is busy with it while the others arrive
        while not slow.received:
            time.sleep(0.001)
        answers = at_once(gw, [("predict", {"records": [row]}) for row in rows])
        leading.join(10)
        for i, (row, answer) in enumerate(zip(rows, answers, strict=True)):
            if i == 5:
                assert answer.status_code == 502, answer.text
                assert answer.json()["message"].startswith(
                    f"the model server for {LATENCY} failed on a valid request: Failed to predict"
                )
            else:
                assert predictions(answer) == [formula(row)]
        assert any(len(call) > 1 and rows[5] in call for call in slow.calls())  # merged, then alone
        assert slow.calls().count([rows[5]]) == 1
        assert gw.metric("gateway_batch_fallbacks_total", model=LATENCY) >= 1
        labels = {"model": LATENCY, "version": "1", "endpoint": "predict"}
        assert gw.metric("gateway_requests_total", **labels, status="502") == 1
        assert gw.metric("gateway_requests_total", **labels, status="200") == 12


def test_a_merged_answer_without_one_prediction_per_row_is_a_502_for_each_of_its_requests(
    registry: str, slow: ScoringServer
) -> None:
    slow.fail = (200, b'{"predictions": [0.5]}')  # always one prediction
    rows = records(8, seed=32)
    with running(registry, {LATENCY: slow.url}, [LATENCY]) as gw:
        answers = at_once(gw, [("predict", {"records": [row]}) for row in rows])
        calls = slow.calls()
        assert len(calls) < len(rows)
        statuses = sorted(answer.status_code for answer in answers)
        alone = sum(len(call) == 1 for call in calls)
        assert statuses == [200] * alone + [502] * (len(rows) - alone)
        for answer in answers:
            if answer.status_code == 502:
                message = answer.json()["message"]
                assert re.fullmatch(
                    rf"the model server for {LATENCY} sent 1 prediction for the \d+ rows of a merged call",
                    message,
                )
            else:
                assert predictions(answer) == [0.5]
