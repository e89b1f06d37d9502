"""The prediction log: every answered record in Postgres (contracts/predlog.py), never dropped.

A background thread owns the connection. Admission comes first: a scoring request (or a feedback
post) reserves room for its rows before the model is called (`admit`), and is answered 503 with
Retry-After when there is none, so a record the gateway answered always has a place to go. The
answered records then wait in memory (at most LOG_BUFFER_MAX rows, reservations included) until the
writer thread takes them: straight to Postgres when it is reachable and nothing older waits, else
to the on-disk spool (`spool.py`, at most about GATEWAY_SPOOL_MAX_BYTES), replayed into Postgres in
order when it is back. If the spool cannot be written either (a full volume), the records stay in
memory, new requests are answered 503, and one log line says why. Matched feedback (feedback.py)
goes the same way, into table `feedback`. A batch Postgres refuses (a value
jsonb cannot hold) is written row by row, a refused row with its features replaced by a marker.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2.extras import execute_values

from contracts.predlog import FEEDBACK_INSERT, FEEDBACK_TEMPLATE, INSERT, INSERT_TEMPLATE
from contracts.settings import libpq_uri
from services.gateway.metrics import GatewayMetrics
from services.gateway.spool import Spool

log = logging.getLogger(__name__)

# Not in the gateway's hands (its role may not run DDL): the create-databases job applies the schema
# (contracts/predlog_migrations). A missing table or grant is a set-up problem, so records are kept (spooled)
# and retried, never dropped as if Postgres had refused their values.
SETUP_ERRORS = (psycopg2.errors.UndefinedTable, psycopg2.errors.InsufficientPrivilege)
MAX_BACKOFF_S = 30.0
SETUP_HINT = "the create-databases job creates the table and the gateway role's grants"


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
    """The actual value for an earlier prediction (matched in the log: feedback.py)."""

    ts: float
    request_id: str
    actual: float


def _jsonb(value: Any) -> str:
    """JSON that Postgres accepts (no NaN / Infinity); a placeholder for what cannot be encoded."""
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps({"unencodable": repr(value)[:1000]})


Item = Prediction | Feedback
# How often the writer looks for spool directories that stopped processes left behind.
ADOPT_EVERY_S = 2.0
# After a failed spool write with nothing left to retry, free space that clears the failure.
SPOOL_ROOM_BYTES = 1 << 20


def encode(item: Item) -> bytes:
    """One spool line."""
    if isinstance(item, Prediction):
        fields: list[Any] = ["p", item.ts, item.request_id, item.model, item.version,
                             _jsonb(item.features), item.prediction, item.latency_ms]  # fmt: skip
    else:
        fields = ["f", item.ts, item.request_id, item.actual]
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


class _Encoded:
    """Features already encoded as JSON text (read back from the spool)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def decode(line: bytes) -> Item:
    fields = json.loads(line)
    if fields[0] == "p":
        return Prediction(
            fields[1], fields[2], fields[3], fields[4], _Encoded(fields[5]), fields[6], fields[7]
        )
    return Feedback(fields[1], fields[2], fields[3])


class PredictionLog:
    """Admission, the in-memory queue, the spool and the writer thread."""

    def __init__(
        self,
        uri: str,
        metrics: GatewayMetrics,
        batch_size: int,
        flush_s: float,
        buffer_max: int,
        spool_dir: str = "",
        spool_max_bytes: int = 1 << 30,
        spool_fsync_s: float = 1.0,
        spool_segment_bytes: int = 8 << 20,
    ) -> None:
        self._dsn = libpq_uri(uri)
        self._metrics = metrics
        self._batch_size = batch_size
        self._flush_s = flush_s
        self._buffer_max = buffer_max
        self._spool_dir = spool_dir
        self._spool_max = spool_max_bytes
        self._spool_fsync_s = spool_fsync_s
        self._segment_bytes = spool_segment_bytes
        self.spool: Spool | None = None
        self._buffer: deque[Item] = deque()
        self._lock = threading.Lock()  # admission counters: the event loop and the recorder thread
        self._reserved = 0
        self._queued = 0  # rows in _buffer
        self._spool_error = ""  # why the spool cannot be written now ("" when it can)
        self._db_ok = False
        self._wake = threading.Event()  # a full batch is waiting
        self._stop = threading.Event()
        self._conn: psycopg2.extensions.connection | None = None
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._backoff = 0.0
        self._retry_at = 0.0
        self._adopt_at = 0.0
        self._last_error = ""
        metrics.log_buffered.set_function(lambda: self._queued)
        metrics.spool_rows.set_function(lambda: self.spool.rows if self.spool else 0)
        metrics.spool_bytes.set_function(lambda: self.spool.bytes if self.spool else 0)
        metrics.spool_max_bytes.set(spool_max_bytes if spool_dir else 0)

    # -- the request path ---------------------------------------------------------------------------

    def refusal(self, rows: int) -> str | None:
        """Why `rows` more records cannot be taken now (the request is answered 503), or None after
        reserving room for them: every admitted row is then passed to `add` or to `release`."""
        spool = self.spool
        with self._lock:
            if self._reserved + self._queued + rows > self._buffer_max:
                reason = "memory_full"
            elif spool is not None and spool.bytes >= self._spool_max:
                reason = "spool_full"
            elif self._spool_error and not self._db_ok:
                reason = "spool_error"
            else:
                self._reserved += rows
                return None
        self._metrics.pushed_back.labels(reason).inc()
        return REFUSALS[reason]

    def flush(self) -> None:
        """Ask the writer thread to write what it holds now, not at its next LOG_FLUSH_S."""
        self._wake.set()

    def release(self, rows: int) -> None:
        """Give back a reservation whose rows will not come (the request failed)."""
        with self._lock:
            self._reserved = max(self._reserved - rows, 0)

    def add(self, items: list[Item], reserved: int) -> None:
        """Queue answered records (the recorder thread) in place of their `reserved` rows."""
        with self._lock:
            self._reserved = max(self._reserved - reserved, 0)
            self._queued += len(items)
            self._buffer.extend(items)
        if self._queued >= self._batch_size:
            self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._spool_dir:
            self.spool = Spool(self._spool_dir, self._segment_bytes, self._spool_fsync_s)
            adopted = self.spool.adopt_orphans()
            if adopted:
                log.info("prediction log: %d spooled records from an earlier process to replay", adopted,
                         extra={"spool_rows": adopted})  # fmt: skip
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most `timeout` seconds): to Postgres, else to the spool."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("prediction log: the writer did not finish in %.0f s", timeout)
            return
        spool = self.spool
        if spool is not None:
            if spool.rows:
                log.warning(
                    "prediction log: %d records stay in the spool (%s) for the next gateway process",
                    spool.rows, spool.dir, extra={"spool_rows": spool.rows},
                )  # fmt: skip
            spool.close()
        if self._buffer:
            log.error(
                "prediction log: %d answered records LOST at shutdown: Postgres unreachable and %s",
                len(self._buffer),
                "the spool not writable" if self._spool_dir else "no spool (GATEWAY_SPOOL_DIR unset)",
                extra={"lost": len(self._buffer)},
            )
        if self._conn is not None:
            self._conn.close()

    # -- the writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        self._connect()  # a failure is retried when records arrive
        while True:
            self._wake.wait(self._flush_s)
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                self._cycle(stopping)  # stopping: Postgres is tried at once, whatever the backoff
            except Exception:  # never let the writer die: the next round retries
                log.exception("prediction log: unexpected error")
                self._failed("unexpected error")
            if stopping:
                return

    def _db_due(self, stopping: bool) -> bool:
        """Whether to talk to Postgres now: connected, or the backoff since the last failure is over."""
        if self._conn is not None:
            return True
        if time.monotonic() < self._retry_at and not stopping:
            return False
        return self._connect()

    def _cycle(self, stopping: bool) -> None:
        spool = self.spool
        if spool is not None and time.monotonic() >= self._adopt_at:
            self._adopt_at = time.monotonic() + ADOPT_EVERY_S
            adopted = spool.adopt_orphans()
            if adopted:
                log.info("prediction log: adopted %d spooled records of a stopped process", adopted)
        backlog = spool is not None and spool.rows > 0
        if self._buffer and not backlog and self._db_due(stopping):
            self._write_memory()
        if self._buffer and spool is not None:
            self._spool_memory(spool)
        elif self._spool_error and spool is not None and spool.has_room(SPOOL_ROOM_BYTES):
            log.info("prediction log: the spool volume has room again", extra={"spool_dir": str(spool.dir)})
            self._spool_error = ""  # nothing was waiting to prove it: admission reopens
        if spool is not None and spool.rows and not stopping and self._db_due(stopping):
            self._replay(spool)  # not when stopping: the next process adopts the spool

    def _take(self, n: int) -> list[Item]:
        with self._lock:
            batch = [self._buffer.popleft() for _ in range(min(n, len(self._buffer)))]
            self._queued -= len(batch)
            return batch

    def _put_back(self, batch: list[Item]) -> None:
        with self._lock:
            self._buffer.extendleft(reversed(batch))
            self._queued += len(batch)

    def _write_memory(self) -> None:
        """Queued records straight to Postgres, batch by batch; on failure they stay queued."""
        while self._buffer and self._conn is not None:
            batch = self._take(self._batch_size)
            if not self._write_batch(batch):
                self._put_back(batch)
                return

    def _spool_memory(self, spool: Spool) -> None:
        """Queued records to the spool, in order; on failure they stay queued (and requests get 503)."""
        while self._buffer:
            batch = self._take(max(self._batch_size, 1000))
            try:
                spool.append([encode(item) for item in batch])
            except OSError as exc:
                self._put_back(batch)
                self._spool_failed(exc)
                return
            if self._spool_error:
                log.info("prediction log: the spool is writable again", extra={"spool_dir": str(spool.dir)})
                self._spool_error = ""

    def _spool_failed(self, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno or 0, "OSError")
        self._metrics.spool_errors.labels(name).inc()
        message = f"{os.strerror(exc.errno) if exc.errno else exc} ({name})"
        if message != self._spool_error:
            log.error(
                "prediction log: cannot write the spool in %s: %s; %d answered records held in memory, "
                "new requests answered 503 until Postgres or the spool can take records",
                self._spool_dir, message, self._queued, extra={"held": self._queued, "error": name},
            )  # fmt: skip
        self._spool_error = message

    def _replay(self, spool: Spool) -> None:
        """Spooled records into Postgres, oldest first, until none is left or Postgres fails."""
        deadline = time.monotonic() + self._flush_s
        while spool.rows and self._conn is not None:
            lines, nbytes = spool.read(self._batch_size)
            if not lines:
                spool.rows = 0  # the count can only be off after a crash: what is on disk wins
                return
            batch: list[Item] = []
            for line in lines:
                try:
                    batch.append(decode(line))
                except (ValueError, IndexError, TypeError):
                    self._metrics.log_dropped.inc()
                    log.error("prediction log: an unreadable spool record was skipped: %r", line[:200])
            if not self._write_batch(batch):
                return
            spool.commit(nbytes, len(lines))
            if time.monotonic() > deadline and self._buffer:
                return  # let new records reach the spool between rounds

    def _write_batch(self, batch: list[Item]) -> bool:
        """Write one batch; False (connection trouble: retry later) or True (written)."""
        try:
            self._write(batch)
            self._db_ok = True
            return True
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:  # connection trouble
            self._failed(f"write failed: {exc}".strip())
            return False
        except SETUP_ERRORS as exc:
            self._failed(f"write failed ({SETUP_HINT}): {exc}".strip())
            return False
        except psycopg2.Error as exc:  # this batch cannot be written as it is
            log.warning("prediction log: Postgres refused a batch of %d (%s); writing it row by row",
                        len(batch), str(exc).strip().splitlines()[0])  # fmt: skip
            if not self._rollback():
                return False
        for item in batch:
            for attempt in (item, _marked(item)):
                try:
                    self._write([attempt])
                    break
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    self._failed(f"write failed: {exc}".strip())
                    return False  # the whole batch again later: rewriting is harmless
                except psycopg2.Error as exc:
                    if not self._rollback():
                        return False
                    if attempt is not item:
                        self._metrics.log_dropped.inc()
                        log.error("prediction log: Postgres refused record %s: %s",
                                  item.request_id, str(exc).strip())  # fmt: skip
        return True

    def _rollback(self) -> bool:
        try:
            self._conn.rollback()  # type: ignore[union-attr]
        except psycopg2.Error:
            self._failed("rollback failed")
            return False
        return True

    def _connect(self) -> bool:
        try:
            conn = psycopg2.connect(self._dsn, connect_timeout=3, application_name="gateway")
        except psycopg2.Error as exc:
            self._failed(f"cannot connect: {exc}".strip())
            return False
        self._conn = conn
        if self._last_error:
            spooled = self.spool.rows if self.spool else 0
            log.info(
                "prediction log: Postgres is reachable again",
                extra={"buffered": self._queued, "spool_rows": spooled},
            )
        self._backoff, self._last_error = 0.0, ""
        return True

    def _failed(self, reason: str) -> None:
        self._db_ok = False
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
            self._conn = None
        self._backoff = min(max(self._backoff * 2, 0.5), MAX_BACKOFF_S)
        self._retry_at = time.monotonic() + self._backoff
        if reason and reason != self._last_error:
            log.warning(
                "prediction log: %s; keeping records (%s), retrying with backoff",
                reason.splitlines()[0],
                "spooled on disk" if self.spool is not None else "in memory",
                extra={"buffered": self._queued, "retry_in_s": self._backoff},
            )
            self._last_error = reason

    def _write(self, batch: list[Item]) -> None:
        assert self._conn is not None
        inserts = [
            (p.ts, p.request_id, p.model, p.version, _features(p.features), p.prediction, p.latency_ms)
            for p in batch
            if isinstance(p, Prediction)
        ]
        # The first value per prediction wins, within a batch too (one statement's rows are unordered).
        first: dict[str, Feedback] = {}
        for item in batch:
            if isinstance(item, Feedback):
                first.setdefault(item.request_id, item)
        feedback = [(f.request_id, f.actual, f.ts) for f in first.values()]
        started = time.perf_counter()
        with self._conn.cursor() as cur:
            if inserts:
                execute_values(cur, INSERT, inserts, template=INSERT_TEMPLATE, page_size=len(inserts))
            if feedback:
                execute_values(
                    cur, FEEDBACK_INSERT, feedback, template=FEEDBACK_TEMPLATE, page_size=len(feedback)
                )
        self._conn.commit()
        self._metrics.log_written.inc(len(inserts))
        log.debug(
            "prediction log: wrote %d records, %d feedback values in %.1f ms",
            len(inserts),
            len(feedback),
            (time.perf_counter() - started) * 1000,
        )


REFUSALS = {
    "memory_full": "the prediction log is full (LOG_BUFFER_MAX records wait for Postgres and the spool)",
    "spool_full": "the prediction log's spool is full (GATEWAY_SPOOL_MAX_BYTES) while Postgres is "
    "unreachable",
    "spool_error": "the prediction log's spool cannot be written (see the gateway log) while Postgres is "
    "unreachable",
}


def _features(features: Any) -> str:
    return features.text if isinstance(features, _Encoded) else _jsonb(features)


def _marked(item: Item) -> Item:
    """`item` with features Postgres cannot refuse (only a prediction can be refused for its values)."""
    if not isinstance(item, Prediction):
        return item
    text = _features(item.features).replace("\\u0000", "")
    return Prediction(item.ts, item.request_id, item.model, item.version,
                      {"unstorable": text[:1000]}, item.prediction, item.latency_ms)  # fmt: skip
