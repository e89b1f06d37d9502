"""Feedback matched to its prediction in the prediction log, whichever replica answered it.

The gateway holds no map of its predictions: a feedback post's request ids are looked up in
Postgres (`contracts.predlog.match`). A prediction answered a moment ago may still be on its way to
the log (each replica writes every LOG_FLUSH_S), so ids not found yet are looked up again, with
backoff, for up to GATEWAY_FEEDBACK_WAIT_S; this replica's own writer is asked to write at once.
Ids still not found, or that already have feedback, are answered as unknown. The matched values
then go to the prediction log like predictions do (memory, Postgres, else the spool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

import psycopg2
import psycopg2.extensions
from tenacity import AsyncRetrying, retry_if_result, stop_before_delay, wait_exponential

from contracts.predlog import Match, match
from contracts.settings import libpq_uri

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.05
MAX_RETRY_S = 0.5
# A lookup is one indexed query; more than this means Postgres is in trouble.
STATEMENT_TIMEOUT_MS = 5000


class LogUnavailable(Exception):
    """The prediction log cannot be asked now (Postgres down, or a set-up problem): one line."""


class FeedbackMatcher:
    """Looks request ids up in the prediction log, on one connection of its own (in a worker thread:
    psycopg2 blocks), reconnecting after a failure."""

    def __init__(self, uri: str, wait_s: float, flush: Callable[[], None]) -> None:
        self._dsn = libpq_uri(uri)
        self._wait_s = wait_s
        self._flush = flush  # asks this replica's log writer to write what it holds now
        self._conn: psycopg2.extensions.connection | None = None
        self._lock = threading.Lock()

    async def match(self, model: str, request_ids: list[str]) -> Match:
        """Which ids the log holds a prediction of `model` for: without feedback (`open`) or with
        (`answered`). Ids found in neither are looked up again until the wait is over. Raises
        LogUnavailable when the log cannot be read."""
        missing = {rid for rid in request_ids if _storable(rid)}  # others were never issued
        found = Match(set(), set())

        async def look_up() -> set[str]:
            """One lookup of the ids still missing; returns those it did not find either."""
            more = await asyncio.to_thread(self._lookup, model, sorted(missing))
            found.open.update(more.open)
            found.answered.update(more.answered)
            missing.difference_update(more.open | more.answered)
            return missing

        await AsyncRetrying(
            retry=retry_if_result(bool),  # ids still missing; LogUnavailable is raised at once
            wait=wait_exponential(multiplier=FIRST_RETRY_S, max=MAX_RETRY_S),
            stop=stop_before_delay(self._wait_s),  # no wait that would end after the budget
            before_sleep=lambda state: self._flush() if state.attempt_number == 1 else None,
            retry_error_callback=lambda _: None,  # out of time: what was found is the answer
            sleep=asyncio.sleep,
        )(look_up)
        return found

    def _lookup(self, model: str, request_ids: list[str]) -> Match:
        with self._lock:
            try:
                conn = self._connection()
                with conn.cursor() as cur:
                    found = match(cur, model, request_ids)
                conn.rollback()  # read only: end the transaction
                return found
            except psycopg2.Error as exc:
                self.close()
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise LogUnavailable(reason) from None

    def _connection(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(
                self._dsn,
                connect_timeout=3,
                application_name="gateway-feedback",
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
            self._conn = None


def _storable(request_id: str) -> bool:
    """Whether Postgres can hold the id: UTF-8 text without NUL (the gateway issues UUIDs)."""
    if "\x00" in request_id:
        return False
    try:
        request_id.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True
