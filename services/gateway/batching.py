"""Adaptive batching: concurrent requests for one model server become one upstream call.

A model server that predicts in about a millisecond spends most of each call on the call itself
(HTTP, JSON into a DataFrame, schema enforcement), not on the rows: MLflow's scoring server parses
sixteen rows in 1.1 to 1.2 times the time it takes for one (`merge`). So requests that wait for the
same model server are merged, and the answer is split back by each request's row count. The policy
is latency first:

- A request that finds its model server idle (a free slot of GATEWAY_UPSTREAM_CONCURRENCY, nothing
  queued) is sent at once, alone, exactly as without batching (its answer is the model server's
  own, so /invocations still passes it through). Waiting for companions only pays when there is a
  queue: a lone client would pay the whole wait and gain nothing, and a free worker left waiting
  is throughput lost.
- Requests that arrive while every slot is taken queue up, in order. As soon as a slot frees, the
  oldest and those behind it go as one call, up to GATEWAY_BATCH_MAX_ROWS rows. The batch size
  adapts to the load by itself: what arrives during one call is the next call, and no timer is
  involved. A request with more rows goes alone, never split; only requests checked against the
  same served version share a call.
- With no limit (GATEWAY_UPSTREAM_CONCURRENCY=0) there is never a slot to wait for: a request that
  finds calls in flight opens a batch that waits at most GATEWAY_BATCH_MAX_WAIT_MS for companions
  (less when it fills up or the model server falls idle; 0: no batching).
- A merged answer that does not hold one prediction per row is a 502 for every request of the call:
  predictions are never assigned to the wrong request.
- A merged call that fails (the model server's error, unreachable, timed out) is retried one request
  at a time in the same slot, so a row that makes the model raise fails only its own request
  (`gateway_batch_fallbacks_total`).

The first request of a batch leads it: woken with the batch, it sends the call and answers the
others. No task is created, and no lock is needed (one event loop). A queued request's wait counts
against GATEWAY_UPSTREAM_TIMEOUT_S, as it did while waiting for a turn: each call gets the time left
to its oldest request. Calls are made through `Upstreams.post`, whose pools then have no limit of
their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from services.gateway import Settings
from services.gateway.metrics import ModelMetrics
from services.gateway.registry import ServedModel, ServedVersion
from services.gateway.upstream import Response, UpstreamTimeout, UpstreamUnavailable, request_id_header
from services.gateway.validation import JSON

log = logging.getLogger(__name__)

# (base URL, body, content type, timeout in seconds, header lines) -> the model server's Response:
# Upstreams.post.
Post = Callable[[str, bytes, str, float, bytes], Awaitable[Response]]
_perf = time.perf_counter
_dumps = json.JSONEncoder(separators=(",", ":")).encode
ABANDONED = "the call that was to carry this request was abandoned (the gateway is stopping)"


class Reply(NamedTuple):
    """One request's answer: the model server's own (`predictions` None: the request went alone), or
    the request's share of a merged answer. `version` is the version that answered (Response)."""

    status: int
    content: bytes
    content_type: str
    version: str
    predictions: list[Any] | None


class UpstreamMisbehaved(Exception):
    """A merged call's 200 answer without one prediction per row (the message says what it had)."""


class _Queued:
    """A request waiting for its call; `future` gets its Reply, or its batch when it is to lead it."""

    __slots__ = ("rows", "payload", "served", "metrics", "entered", "future", "request_id")

    def __init__(
        self,
        rows: list[dict[str, Any]],
        payload: bytes,
        served: ServedVersion,
        metrics: ModelMetrics,
        future: asyncio.Future[Reply | list[_Queued]],
        request_id: str,
    ) -> None:
        self.rows, self.payload, self.served, self.metrics = rows, payload, served, metrics
        self.request_id = request_id
        self.entered = _perf()
        self.future = future


class Batcher:
    """The queue in front of one model server (the models that name the same server share it)."""

    def __init__(
        self, post: Post, base_url: str, concurrency: int, max_rows: int, max_wait_s: float, timeout_s: float
    ) -> None:
        self._post, self._url = post, base_url
        self._limit = concurrency or sys.maxsize  # 0: no limit
        # Sent at once, alone, when nothing is queued and fewer calls than this are in flight: a
        # free slot; with no limit, an idle model server (with no wait allowed: always).
        self._alone_below = concurrency or (1 if max_wait_s > 0 else sys.maxsize)
        self._max_rows, self._max_wait_s, self._timeout_s = max_rows, max_wait_s, timeout_s
        self._in_flight = 0
        self._queue: deque[_Queued] = deque()
        self._queued_rows = 0
        self._hold: asyncio.TimerHandle | None = None  # an open batch waiting for companions

    async def send(
        self,
        rows: list[dict[str, Any]],
        payload: bytes,
        served: ServedVersion,
        metrics: ModelMetrics,
        request_id: str,
    ) -> Reply:
        """The answer for checked `rows` of `served`; `payload` is their own body, sent when the
        request goes alone. Raises UpstreamUnavailable, UpstreamTimeout or UpstreamMisbehaved."""
        in_flight = self._in_flight
        if in_flight < self._alone_below and not self._queue:
            self._in_flight = in_flight + 1  # idle: at once, alone
            metrics.batch_size.observe(1)
            metrics.queue_wait.observe(0.0)
            try:
                response = await self._post(
                    self._url, payload, JSON, self._timeout_s, request_id_header([request_id])
                )
            finally:
                self._release()
            return Reply(*response, None)

        loop = asyncio.get_running_loop()
        entry = _Queued(rows, payload, served, metrics, loop.create_future(), request_id)
        if not self._queue and in_flight < self._limit:  # no limit, calls in flight: wait a moment
            if self._hold is not None:  # left over by requests cancelled while they waited
                self._hold.cancel()
            self._hold = loop.call_later(self._max_wait_s, self._hold_over)
        self._queue.append(entry)
        self._queued_rows += len(rows)
        if in_flight < self._limit:
            self._dispatch()  # sends at once if the open batch just filled up
        try:
            outcome = await entry.future
        except asyncio.CancelledError:
            self._abandon(entry)
            raise
        if isinstance(outcome, list):
            return await self._lead(outcome)
        return outcome

    # -- the queue ---------------------------------------------------------------------------------

    def _release(self) -> None:
        """A call ended: its slot goes to the queue."""
        self._in_flight -= 1
        if self._queue:
            self._dispatch()

    def _hold_over(self) -> None:
        self._hold = None
        self._dispatch()

    def _dispatch(self) -> None:
        """Give free slots to queued requests: each batch is handed to its first request, which sends it."""
        queue = self._queue
        while queue and self._in_flight < self._limit:
            if self._hold is not None:
                if self._in_flight and self._queued_rows < self._max_rows:
                    return  # the open batch may still gather companions
                self._hold.cancel()
                self._hold = None
            batch = self._take()
            if batch:
                self._in_flight += 1
                batch[0].future.set_result(batch)

    def _take(self) -> list[_Queued]:
        """The oldest queued requests of one served version, up to GATEWAY_BATCH_MAX_ROWS rows (or the
        oldest alone, when it has more)."""
        queue = self._queue
        batch: list[_Queued] = []
        rows = 0
        while queue:
            entry = queue[0]
            if entry.future.done():  # cancelled while queued
                queue.popleft()
                self._queued_rows -= len(entry.rows)
                continue
            if batch and (entry.served is not batch[0].served or rows + len(entry.rows) > self._max_rows):
                break
            queue.popleft()
            batch.append(entry)
            rows += len(entry.rows)
        self._queued_rows -= rows
        return batch

    def _abandon(self, entry: _Queued) -> None:
        """The request's task was cancelled while it waited (only when the gateway stops)."""
        future = entry.future
        if not future.done() or future.cancelled():
            if entry in self._queue:
                self._queue.remove(entry)
                self._queued_rows -= len(entry.rows)
        elif future.exception() is None and isinstance(batch := future.result(), list):
            self._fail(batch[1:], ABANDONED)  # it was to send them
            self._release()

    @staticmethod
    def _fail(entries: list[_Queued], reason: str) -> None:
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(UpstreamUnavailable(reason))

    # -- the calls ----------------------------------------------------------------------------------

    async def _lead(self, batch: list[_Queued]) -> Reply:
        """Send `batch` (this request is its first) and answer the others; this request's Reply."""
        try:
            sent = _perf()
            for entry in batch:
                entry.metrics.queue_wait.observe(sent - entry.entered)
            outcomes = await self._merged(batch) if len(batch) > 1 else [await self._alone(batch[0])]
        except BaseException:  # cancelled (the gateway is stopping), or a bug
            self._fail(batch[1:], ABANDONED)
            self._release()
            raise
        for entry, outcome in zip(batch[1:], outcomes[1:], strict=True):
            if entry.future.done():  # cancelled meanwhile
                continue
            if isinstance(outcome, Exception):
                entry.future.set_exception(outcome)
            else:
                entry.future.set_result(outcome)
        self._release()
        if isinstance(outcomes[0], Exception):
            raise outcomes[0]
        return outcomes[0]

    async def _merged(self, batch: list[_Queued]) -> list[Reply | Exception]:
        """One call for the whole batch; on failure, one call per request."""
        try:
            response: Response | None = await self._call(batch, merge(batch))
        except (UpstreamUnavailable, UpstreamTimeout):
            response = None
        if response is not None and response.status == 200:
            return split(response, batch, self._url)
        batch[0].metrics.batch_fallbacks.inc()
        return [await self._alone(entry) for entry in batch]

    async def _alone(self, entry: _Queued) -> Reply | Exception:
        try:
            response = await self._call([entry], entry.payload)
        except (UpstreamUnavailable, UpstreamTimeout) as exc:
            return exc
        return Reply(*response, None)

    async def _call(self, batch: list[_Queued], body: bytes) -> Response:
        """The upstream call carrying `batch`, within the time left to its oldest request."""
        left = batch[0].entered + self._timeout_s - _perf()
        if left <= 0:
            raise UpstreamTimeout(f"no answer from {self._url} within {self._timeout_s:g} s")
        batch[0].metrics.batch_size.observe(len(batch))
        return await self._post(self._url, body, JSON, left, request_id_header(e.request_id for e in batch))


def merge(batch: list[_Queued]) -> bytes:
    """The body of a merged call: every request's rows, in order, as `Columns.body` encodes them."""
    return batch[0].served.columns.body([row for entry in batch for row in entry.rows])


def split(response: Response, batch: list[_Queued], base_url: str) -> list[Reply | Exception]:
    """Each request's share of a merged answer's predictions, in order; UpstreamMisbehaved for every
    request when the answer does not hold exactly one prediction per row."""
    try:
        predictions = json.loads(response.content)["predictions"]
    except (ValueError, KeyError, TypeError, RecursionError):  # UnicodeDecodeError is a ValueError
        predictions = None
    rows = sum(len(entry.rows) for entry in batch)
    if type(predictions) is not list or len(predictions) != rows:
        count = len(predictions) if type(predictions) is list else 0
        got = f"{count} prediction{'s' * (count != 1)}" if type(predictions) is list else "no predictions"
        message = f"sent {got} for the {rows} rows of a merged call"
        log.warning("model server %s %s", base_url, message, extra={"model": batch[0].metrics.model})
        return [UpstreamMisbehaved(message) for _ in batch]
    replies: list[Reply | Exception] = []
    start = 0
    for entry in batch:
        end = start + len(entry.rows)
        replies.append(Reply(200, b"", JSON, response.version, predictions[start:end]))
        start = end
    return replies


def build_batchers(models: dict[str, ServedModel], post: Post, settings: Settings) -> dict[str, Batcher]:
    """Model name -> the Batcher of its model server (one per server URL)."""
    by_url: dict[str, Batcher] = {}
    for model in models.values():
        if model.upstream not in by_url:
            by_url[model.upstream] = Batcher(
                post,
                model.upstream,
                settings.upstream_concurrency,
                settings.batch_max_rows,
                settings.batch_max_wait_ms / 1000,
                settings.upstream_timeout_s,
            )
    return {name: by_url[model.upstream] for name, model in models.items()}
