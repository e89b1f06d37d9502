"""The serving containers, seen through one pooled aiohttp session."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from yarl import URL

# uvicorn (the model server) closes idle keep-alive connections after 5 s: release them before it.
KEEPALIVE_S = 4.0
PING_TIMEOUT_S = 1.0


class UpstreamUnavailable(Exception):
    """The serving container cannot be reached (refused, reset, closed the connection)."""


class UpstreamTimeout(Exception):
    """The serving container did not answer in time."""


class Upstreams:
    """POSTs to and health pings of the serving containers."""

    def __init__(self, timeout_s: float, ping_cache_s: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 5.0))
        self._ping_timeout = aiohttp.ClientTimeout(total=PING_TIMEOUT_S)
        self._ping_cache_s = ping_cache_s
        self._pings: dict[str, tuple[float, bool, str]] = {}
        self._headers: dict[str, dict[str, str]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the session (inside the running event loop)."""
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, url: URL, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        """POST `body`; return (status, body, content type). Raises UpstreamUnavailable/UpstreamTimeout.

        A pooled connection the server has just closed is retried once on a fresh one: scoring is
        a pure function of the input, so repeating it is safe.
        """
        assert self._session is not None, "Upstreams.start() was not awaited"
        headers = self._headers.get(content_type)
        if headers is None:
            headers = self._headers.setdefault(content_type, {"Content-Type": content_type})
        for attempt in (1, 2):
            try:
                async with self._session.post(url, data=body, headers=headers) as response:
                    content = await response.read()
                    return response.status, content, response.headers.get("Content-Type", "")
            except TimeoutError as exc:  # before ClientError: aiohttp's timeouts are both
                raise UpstreamTimeout(f"no answer from {url} within {self._timeout.total:g} s") from exc
            except aiohttp.ServerDisconnectedError as exc:
                if attempt == 2:
                    raise UpstreamUnavailable(f"{url} closed the connection") from exc
            except aiohttp.ClientError as exc:
                raise UpstreamUnavailable(f"{url} is unreachable ({type(exc).__name__}: {exc})") from exc
        raise AssertionError("not reached")

    async def ping(self, base_url: str) -> tuple[bool, str]:
        """(healthy, detail) of GET {base_url}/ping, cached for a moment so /health stays cheap."""
        now = time.monotonic()
        cached = self._pings.get(base_url)
        if cached is not None and now - cached[0] < self._ping_cache_s:
            return cached[1], cached[2]
        assert self._session is not None
        try:
            async with self._session.get(f"{base_url}/ping", timeout=self._ping_timeout) as response:
                await response.read()
                ok, detail = response.status == 200, f"HTTP {response.status}"
        except TimeoutError:
            ok, detail = False, f"no answer within {PING_TIMEOUT_S:g} s"
        except aiohttp.ClientError as exc:
            ok, detail = False, f"unreachable ({type(exc).__name__})"
        self._pings[base_url] = (time.monotonic(), ok, detail)
        return ok, detail

    async def ping_all(self, base_urls: list[str]) -> list[tuple[bool, str]]:
        return list(await asyncio.gather(*(self.ping(url) for url in base_urls)))
