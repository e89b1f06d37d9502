"""The prediction log: every predicted record in Postgres table `predictions`, written in batches.

A background thread owns the connection. Producers append to a bounded in-memory buffer and never
wait: when the buffer is full the record is dropped and counted. While Postgres is unreachable the
buffer keeps the records and the writer retries with exponential backoff. Feedback updates
(`actual`) go through the same ordered buffer, so an update never overtakes its insert.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2.extras import execute_values

from contracts.settings import libpq_uri
from services.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id          bigserial PRIMARY KEY,
    ts          timestamptz NOT NULL,
    request_id  text NOT NULL UNIQUE,
    model       text NOT NULL,
    version     text NOT NULL,
    features    jsonb NOT NULL,
    prediction  double precision,
    latency_ms  double precision,
    actual      double precision,
    feedback_ts timestamptz
);
CREATE INDEX IF NOT EXISTS predictions_model_ts ON predictions (model, ts);
"""
INSERT = (
    "INSERT INTO predictions (ts, request_id, model, version, features, prediction, latency_ms) "
    "VALUES %s ON CONFLICT (request_id) DO NOTHING"
)
INSERT_TEMPLATE = "(to_timestamp(%s), %s, %s, %s, %s::jsonb, %s, %s)"
UPDATE = (
    "UPDATE predictions AS p SET actual = v.actual, feedback_ts = to_timestamp(v.ts) "
    "FROM (VALUES %s) AS v (request_id, actual, ts) WHERE p.request_id = v.request_id"
)
UPDATE_TEMPLATE = "(%s, %s::double precision, %s::double precision)"
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class Prediction:
    """One predicted record."""

    ts: float
    request_id: str
    model: str
    version: str
    features: Any
    prediction: float | None
    latency_ms: float


@dataclass(frozen=True)
class Feedback:
    """The actual value for an earlier prediction."""

    ts: float
    request_id: str
    actual: float


def _jsonb(value: Any) -> str:
    """JSON that Postgres accepts (no NaN / Infinity); a placeholder for what cannot be encoded."""
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps({"unencodable": repr(value)[:1000]})


class PredictionLog:
    """Bounded buffer plus the writer thread."""

    def __init__(
        self, uri: str, metrics: GatewayMetrics, batch_size: int, flush_s: float, buffer_max: int
    ) -> None:
        self._dsn = libpq_uri(uri)
        self._metrics = metrics
        self._batch_size = batch_size
        self._flush_s = flush_s
        self._buffer_max = buffer_max
        self._buffer: deque[Prediction | Feedback] = deque()
        self._wake = threading.Event()  # a full batch is waiting
        self._stop = threading.Event()
        self._conn: psycopg2.extensions.connection | None = None
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._backoff = 0.0
        self._last_error = ""
        metrics.log_buffered.set_function(lambda: len(self._buffer))

    def add(self, item: Prediction | Feedback) -> bool:
        """Queue one record; False (and counted as dropped) when the buffer is full."""
        if len(self._buffer) >= self._buffer_max:
            self._metrics.log_dropped.inc()
            return False
        self._buffer.append(item)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()
        return True

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Flush what is buffered (trying for at most `timeout` seconds), then close."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._buffer:
            log.warning(
                "prediction log: %d records not written at shutdown (Postgres unavailable)",
                len(self._buffer),
                extra={"lost": len(self._buffer)},
            )
        if self._conn is not None and not self._thread.is_alive():
            self._conn.close()

    def _run(self) -> None:
        self._connect()  # creates the table at start; a failure is retried when records arrive
        while True:
            if self._backoff:  # Postgres is down: full batches must not shorten the backoff
                self._stop.wait(self._backoff)
            else:
                self._wake.wait(self._flush_s)
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                if self._buffer:
                    self._drain()
            except Exception:  # never let the writer die: the next round retries
                log.exception("prediction log: unexpected error")
                self._failed("unexpected error")
            if stopping:
                return

    def _drain(self) -> None:
        """Write everything buffered, batch by batch; on failure keep the batch and back off."""
        while self._buffer:
            if self._conn is None and not self._connect():
                return
            batch = [self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))]
            try:
                self._write(batch)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:  # connection trouble
                self._buffer.extendleft(reversed(batch))
                self._failed(f"write failed: {exc}".strip())
                return
            except psycopg2.Error as exc:  # this batch cannot be written: retrying would not help
                self._metrics.log_dropped.inc(len(batch))
                log.error("prediction log: dropped a batch of %d: %s", len(batch), str(exc).strip())
                try:
                    self._conn.rollback()  # type: ignore[union-attr]
                except psycopg2.Error:
                    self._failed("rollback failed")
                    return

    def _connect(self) -> bool:
        try:
            conn = psycopg2.connect(self._dsn, connect_timeout=3, application_name="gateway")
            with conn.cursor() as cur:
                cur.execute(SCHEMA)
            conn.commit()
        except psycopg2.Error as exc:
            self._failed(f"cannot connect: {exc}".strip())
            return False
        self._conn = conn
        if self._last_error:
            log.info("prediction log: Postgres is reachable again", extra={"buffered": len(self._buffer)})
        self._backoff, self._last_error = 0.0, ""
        return True

    def _failed(self, reason: str) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
            self._conn = None
        self._backoff = min(max(self._backoff * 2, 0.5), MAX_BACKOFF_S)
        if reason and reason != self._last_error:
            log.warning(
                "prediction log: %s; keeping records buffered, retrying with backoff",
                reason.splitlines()[0],
                extra={"buffered": len(self._buffer), "retry_in_s": self._backoff},
            )
            self._last_error = reason

    def _write(self, batch: list[Prediction | Feedback]) -> None:
        assert self._conn is not None
        inserts = [
            (p.ts, p.request_id, p.model, p.version, _jsonb(p.features), p.prediction, p.latency_ms)
            for p in batch
            if isinstance(p, Prediction)
        ]
        updates = [(f.request_id, f.actual, f.ts) for f in batch if isinstance(f, Feedback)]
        started = time.perf_counter()
        with self._conn.cursor() as cur:
            # Inserts first: within a batch every feedback comes after its prediction.
            if inserts:
                execute_values(cur, INSERT, inserts, template=INSERT_TEMPLATE, page_size=len(inserts))
            if updates:
                execute_values(cur, UPDATE, updates, template=UPDATE_TEMPLATE, page_size=len(updates))
        self._conn.commit()
        self._metrics.log_written.inc(len(inserts))
        log.debug(
            "prediction log: wrote %d records, %d feedback updates in %.1f ms",
            len(inserts),
            len(updates),
            (time.perf_counter() - started) * 1000,
        )
