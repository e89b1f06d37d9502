"""The serving containers, seen through pooled keep-alive HTTP/1.1 connections.

A proxy hop is the gateway's whole cost, so this client is lean: one asyncio protocol per connection,
responses parsed by httptools (llhttp, the parser uvicorn uses), each request written in one
`write`. On these machines aiohttp's client cost about 0.7 ms more per request in front of a real
model server (docs/benchmarks.md). The peers are model servers speaking HTTP/1.1 with
Content-Length or chunked bodies (`mlflow models serve` is uvicorn).

Each model server gets at most `concurrency` requests at a time; the rest wait here, in order.
`mlflow models serve` runs predictions in threads that contend for the GIL, so it answers more
requests per second one at a time per worker than many at once. With adaptive batching the pools
have no limit: batching.py keeps it, and queues what waits.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

from contracts.models import VERSION_HEADER

# uvicorn (the model server) closes idle keep-alive connections after 5 s: drop them before it.
KEEPALIVE_S = 4.0
PING_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 5.0
# Backoff between tries on a refused or reset connection (GATEWAY_UPSTREAM_RETRY_S bounds the total).
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0


_VERSION_HEADER = VERSION_HEADER.lower().encode("latin-1")


class Response(NamedTuple):
    """A model server's answer. `version`: its `X-Model-Version` header, the version that answered
    ("" from a server without the launcher). During a rollout both versions answer for a moment
    (each on the connections it accepted), so only the answer itself tells which one did."""

    status: int
    content: bytes
    content_type: str
    version: str


def request_id_header(request_ids: Iterable[str]) -> bytes:
    """The X-Request-ID header line telling a model server which gateway requests a call carries:
    one id, or (a merged call) every id, comma-separated in the call's row order. The gateway's ids
    are UUIDs, so the line needs no escaping."""
    return b"X-Request-ID: " + ", ".join(request_ids).encode("ascii") + b"\r\n"


class UpstreamUnavailable(Exception):
    """The serving container cannot be reached (refused, reset, closed the connection).
    `connected`: False when no connection could be made, so the request never reached it.
    `replied`: whether any of an answer arrived before the connection was lost."""

    def __init__(self, message: str, connected: bool = True, replied: bool = True) -> None:
        super().__init__(message)
        self.connected = connected
        self.replied = replied


class UpstreamTimeout(Exception):
    """The serving container did not answer in time."""


class _Closed(Exception):
    """The connection closed before the response was complete; `replied` if any of it arrived."""

    def __init__(self, replied: bool, reason: str) -> None:
        super().__init__(reason)
        self.replied = replied


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._body: list[bytes] = []
        self._content_type = ""
        self._version = ""
        self._replied = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._replied = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(_Closed(True, f"malformed HTTP response ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(_Closed(self._replied, f"connection closed ({exc or 'by the server'})"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self._content_type = value.decode("latin-1")
        elif name == _VERSION_HEADER:
            self._version = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, body = self._waiter, b"".join(self._body)
        status = self._parser.get_status_code()
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(status, body, self._content_type, self._version))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    async def request(self, head: bytes, body: bytes) -> Response:
        """Send one request; its Response. Raises _Closed."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._body, self._content_type, self._version, self._replied = [], "", "", False
        self.transport.write(head + body if body else head)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Keep-alive connections to one model server, and its concurrency limit."""

    def __init__(self, base_url: str, concurrency: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{base_url!r} is not an http(s)://host[:port] URL")
        self.base_url = base_url
        self._host = parts.hostname
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._port = parts.port or (443 if self._ssl else 80)
        self._prefix = parts.path.rstrip("/")
        authority = parts.netloc.rsplit("@", 1)[-1]
        self._host_header = f"Host: {authority}\r\n".encode("latin-1")
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(concurrency) if concurrency > 0 else None

    async def request(
        self, method: str, path: str, body: bytes = b"", content_type: str | None = None, headers: bytes = b""
    ) -> Response:
        """The Response to one request; `headers`: more header lines, each ending in CRLF. Raises
        UpstreamUnavailable, or TimeoutError from the caller's deadline (the connection in use is then
        closed, not reused)."""
        head = self._head(method, path, body, content_type, headers)
        if self._slots is None:
            return await self._send(head, body)
        async with self._slots:
            return await self._send(head, body)

    def _head(
        self, method: str, path: str, body: bytes, content_type: str | None, headers: bytes = b""
    ) -> bytes:
        lines = [f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1"), self._host_header, headers]
        if content_type is not None:  # from the client's request: the HTTP server let no CR/LF through
            lines.append(f"Content-Type: {content_type}\r\n".encode("latin-1"))
        if body or method == "POST":
            lines.append(b"Content-Length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _send(self, head: bytes, body: bytes) -> Response:
        """On a pooled connection that the server closed meanwhile (nothing answered), retry once on a
        new one: model servers compute a pure function of the input, so a repeat is safe."""
        conn = self._take()
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect()
            try:
                result = await conn.request(head, body)
                break
            except _Closed as exc:
                conn.close()
                if not reused or exc.replied:
                    raise UpstreamUnavailable(f"{self.base_url}: {exc}", replied=exc.replied) from None
                conn, reused = None, False
            except BaseException:  # timeout or cancellation: the answer may still come, drop it
                conn.close()
                raise
        if not conn.closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        return result

    def _take(self) -> _Connection | None:
        """The most recently used live idle connection (the others expire first)."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_S:
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, conn = await loop.create_connection(_Connection, self._host, self._port, ssl=self._ssl)
        except TimeoutError:
            message = f"{self.base_url}: no connection within {CONNECT_TIMEOUT_S:g} s"
            raise UpstreamUnavailable(message, connected=False) from None
        except OSError as exc:
            message = f"{self.base_url} is unreachable ({exc.strerror or exc})"
            raise UpstreamUnavailable(message, connected=False) from None
        return conn

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


class Upstreams:
    """POSTs to and health pings of the serving containers, one Pool per base URL."""

    def __init__(
        self,
        timeout_s: float,
        ping_cache_s: float,
        concurrency: int = 0,
        retry_s: float = 0.0,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._on_retry = on_retry
        self._ping_cache_s = ping_cache_s
        self._concurrency = concurrency
        self._pools: dict[str, Pool] = {}
        self._pings: dict[str, tuple[float, bool, str]] = {}
        self._ping_pools: dict[str, Pool] = {}

    async def close(self) -> None:
        for pool in (*self._pools.values(), *self._ping_pools.values()):
            pool.close()

    @staticmethod
    def _pool(pools: dict[str, Pool], base_url: str, concurrency: int) -> Pool:
        """The pool for `base_url` in `pools`, made on first use (inside the event loop)."""
        pool = pools.get(base_url)
        if pool is None:
            pool = pools[base_url] = Pool(base_url, concurrency)
        return pool

    async def post(
        self,
        base_url: str,
        body: bytes,
        content_type: str,
        timeout_s: float | None = None,
        headers: bytes = b"",
    ) -> Response:
        """POST `body` (and `headers`, lines ending in CRLF: the request id) to {base_url}/invocations;
        its Response. Raises
        UpstreamUnavailable / UpstreamTimeout after `timeout_s` (default GATEWAY_UPSTREAM_TIMEOUT_S;
        the deadline includes waiting for a turn).

        A connection that cannot be made (refused: a serving container restarting) is tried again
        with backoff for up to GATEWAY_UPSTREAM_RETRY_S, within that deadline. A pooled connection
        the server closed or reset before answering is already retried once on a new one (`Pool`).
        A request sent on a fresh connection and lost before any answer is repeated once more, in
        the same window: a model server that stops closes the connections it accepted but never
        read (measured: one lost request per serving restart under traffic, issue 12). Only once,
        so that a request that crashes the model server crashes it at most twice, as Envoy's
        `retry_on: reset` with one retry would."""
        timeout_s = self._timeout_s if timeout_s is None else timeout_s
        give_up = time.monotonic() + self._retry_s
        delay = RETRY_FIRST_S
        repeated = False
        try:
            async with asyncio.timeout(timeout_s):
                pool = self._pool(self._pools, base_url, self._concurrency)
                while True:
                    try:
                        return await pool.request("POST", "/invocations", body, content_type, headers)
                    except UpstreamUnavailable as exc:
                        sent = exc.connected
                        if (sent and (exc.replied or repeated)) or time.monotonic() + delay > give_up:
                            raise
                        repeated = repeated or sent
                    if self._on_retry is not None:
                        self._on_retry(base_url)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
        except TimeoutError:
            raise UpstreamTimeout(f"no answer from {base_url} within {timeout_s:.3g} s") from None

    async def ping(self, base_url: str) -> tuple[bool, str]:
        """(healthy, detail) of GET {base_url}/ping, cached for a moment so /health stays cheap.
        Pings use their own connections: a busy model server's queue does not delay them."""
        now = time.monotonic()
        cached = self._pings.get(base_url)
        if cached is not None and now - cached[0] < self._ping_cache_s:
            return cached[1], cached[2]
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                status = (await self._pool(self._ping_pools, base_url, 0).request("GET", "/ping")).status
            ok, detail = status == 200, f"HTTP {status}"
        except TimeoutError:
            ok, detail = False, f"no answer within {PING_TIMEOUT_S:g} s"
        except UpstreamUnavailable as exc:
            ok, detail = False, f"unreachable ({exc})"
        self._pings[base_url] = (time.monotonic(), ok, detail)
        return ok, detail

    async def ping_all(self, base_urls: list[str]) -> list[tuple[bool, str]]:
        return list(await asyncio.gather(*(self.ping(url) for url in base_urls)))
