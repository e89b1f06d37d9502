"""The gateway's upstream client against real HTTP servers on loopback sockets.

Each test starts a small asyncio server that answers the way a model server (or a failing one)
does: keep-alive, chunked bodies, idle connections closed by the server, hangs, refusals, garbage.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from services.gateway.upstream import Upstreams, UpstreamTimeout, UpstreamUnavailable

Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    """Counts connections and concurrent requests; `reply` answers each request."""

    reply: Reply
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    await self.reply(request, writer)
                finally:
                    self.in_flight -= 1
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def response(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + extra + b"\r\n" + body


async def ok(request: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(response(b'{"predictions": [1.5]}'))
    await writer.drain()


def run(
    reply: Reply, scenario: Callable[[Upstreams, str, Server], Awaitable[None]], **settings: float
) -> Server:
    """Serve `reply` on a free loopback port and run `scenario` against it."""
    server = Server(reply)

    async def main() -> None:
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        upstreams = Upstreams(
            timeout_s=settings.get("timeout_s", 5.0),
            ping_cache_s=0.0,
            concurrency=int(settings.get("concurrency", 0)),
            retry_s=settings.get("retry_s", 0.0),
        )
        try:
            await scenario(upstreams, f"http://127.0.0.1:{port}", server)
        finally:
            await upstreams.close()
            listener.close()

    asyncio.run(main())
    return server


def test_each_response_names_the_version_that_sent_it_on_one_connection() -> None:
    """A rollout seen from one keep-alive connection: the X-Model-Version of each answer, not of the
    connection or of an earlier answer (a header the next answer lacks is not carried over)."""
    headers = iter([b"X-Model-Version: 1\r\n", b"x-model-version: 2\r\n", b""])

    async def versioned(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(response(b'{"predictions": [1.5]}', extra=next(headers)))
        await writer.drain()

    async def scenario(upstreams: Upstreams, url: str, server: Server) -> None:
        versions = [(await upstreams.post(url, b"{}", "application/json")).version for _ in range(3)]
        assert versions == ["1", "2", ""]

    server = run(versioned, scenario)
    assert server.connections == 1


def test_requests_reuse_one_keep_alive_connection() -> None:
    async def scenario(upstreams: Upstreams, url: str, server: Server) -> None:
        for _ in range(3):
            status, body, content_type, version = await upstreams.post(
                url, b'{"inputs": [1]}', "application/json"
            )
            assert (status, content_type, version) == (200, "application/json", "")  # no X-Model-Version
            assert json.loads(body) == {"predictions": [1.5]}

    server = run(ok, scenario)
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /invocations HTTP/1.1\r\n")
    assert b"Content-Type: application/json\r\n" in first and first.endswith(b'\r\n\r\n{"inputs": [1]}')


def test_chunked_answers_and_error_statuses_come_back_whole() -> None:
    async def chunked(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
            b'6\r\n{"mess\r\n12\r\nage": "bad input"}\r\n0\r\n\r\n'
        )
        await writer.drain()

    async def scenario(upstreams: Upstreams, url: str, server: Server) -> None:
        status, body, _, _ = await upstreams.post(url, b"{}", "application/json")
        assert status == 400 and json.loads(body) == {"message": "bad input"}

    run(chunked, scenario)


def test_an_idle_connection_the_server_closed_is_retried_once_on_a_new_one() -> None:
    answered: set[int] = set()

    async def once_per_connection(request: bytes, writer: asyncio.StreamWriter) -> None:
        if id(writer) in answered:  # the race with a keep-alive timeout: closed as the request came
            writer.close()
            return
        answered.add(id(writer))
        await ok(request, writer)

    async def scenario(upstreams: Upstreams, url: str, server: Server) -> None:
        for _ in range(3):
            assert (await upstreams.post(url, b"{}", "application/json"))[0] == 200

    server = run(once_per_connection, scenario)
    assert server.connections == 3 and len(server.requests) == 5  # 3 answered, 2 cut off and retried


def test_connection_close_answers_are_not_reused() -> None:
    async def closing(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(response(b'{"predictions": [2]}', extra=b"connection: close\r\n"))
        await writer.drain()
        await asyncio.sleep(0.2)  # the client must not send a second request meanwhile

    async def scenario(upstreams: Upstreams, url: str, server: Server) -> None:
        for _ in range(2):
            assert (await upstreams.post(url, b"{}", "application/json"))[0] == 200

    server = run(closing, scenario)
    assert server.connections == 2 and len(server.requests) == 2


def test_a_hung_server_times_out() -> None:
    async def hang(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async def scenario(upstreams: Upstreams, url: str, server: Server) -> None:
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamTimeout, match="within 0.3 s"):
            await upstreams.post(url, b"{}", "application/json")
        assert asyncio.get_running_loop().time() - started < 2
        ok_, detail = await upstreams.ping(url)
        assert not ok_ and "no answer" in detail

    run(hang, scenario, timeout_s=0.3)


def test_a_server_that_fails_mid_answer_is_unavailable_and_not_asked_twice() -> None:
    async def cut(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"predic')
        await writer.drain()
        writer.close()

    async def scenario(upstreams: Upstreams, url: str, server: Server) -> None:
        with pytest.raises(UpstreamUnavailable, match="connection closed"):
            await upstreams.post(url, b"{}", "application/json")

    server = run(cut, scenario)
    assert len(server.requests) == 1


def test_a_garbage_answer_is_unavailable() -> None:
    async def garbage(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()

    async def scenario(upstreams: Upstreams, url: str, server: Server) -> None:
        with pytest.raises(UpstreamUnavailable, match="malformed HTTP response"):
            await upstreams.post(url, b"{}", "application/json")

    run(garbage, scenario)


def test_a_refused_connection_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused

        async def main() -> None:
            upstreams = Upstreams(timeout_s=5.0, ping_cache_s=0.0)
            with pytest.raises(UpstreamUnavailable, match="unreachable"):
                await upstreams.post(f"http://127.0.0.1:{port}", b"{}", "application/json")
            ok_, detail = await upstreams.ping(f"http://127.0.0.1:{port}")
            assert not ok_ and detail.startswith("unreachable")

        asyncio.run(main())


def test_a_refused_connection_is_tried_again_until_the_server_is_back() -> None:
    """A serving container restarting: connections are refused for a while, then answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused until the server below starts
        server, retried = Server(ok), []

        async def main() -> None:
            upstreams = Upstreams(timeout_s=5.0, ping_cache_s=0.0, retry_s=3.0, on_retry=retried.append)

            async def come_back() -> None:
                await asyncio.sleep(0.5)
                sock.close()
                await asyncio.start_server(server.handle, "127.0.0.1", port)

            started = asyncio.get_running_loop().time()
            back = asyncio.create_task(come_back())
            status, *_ = await upstreams.post(f"http://127.0.0.1:{port}", b"{}", "application/json")
            assert status == 200 and asyncio.get_running_loop().time() - started >= 0.5
            await back
            await upstreams.close()

        asyncio.run(main())
    assert len(server.requests) == 1 and len(retried) >= 2
    assert set(retried) == {f"http://127.0.0.1:{port}"}


def test_retries_give_up_after_the_retry_deadline() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

        async def main() -> None:
            upstreams = Upstreams(timeout_s=5.0, ping_cache_s=0.0, retry_s=0.5)
            started = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamUnavailable, match="unreachable"):
                await upstreams.post(f"http://127.0.0.1:{port}", b"{}", "application/json")
            assert 0.3 < asyncio.get_running_loop().time() - started < 2

        asyncio.run(main())


def test_a_request_lost_on_a_fresh_connection_is_repeated_once_not_again_and_again() -> None:
    """A stopping model server drops a request it never read, so it is sent once more; a request that
    kills its model server must not be sent again and again."""

    async def cut(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()  # a reset, no answer

    async def scenario(upstreams: Upstreams, url: str, server: Server) -> None:
        with pytest.raises(UpstreamUnavailable, match="connection closed"):
            await upstreams.post(url, b"{}", "application/json")

    server = run(cut, scenario, retry_s=5.0)
    assert len(server.requests) == 2


def test_a_request_lost_on_a_fresh_connection_is_not_repeated_without_retries() -> None:
    async def cut(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()

    async def scenario(upstreams: Upstreams, url: str, server: Server) -> None:
        with pytest.raises(UpstreamUnavailable, match="connection closed"):
            await upstreams.post(url, b"{}", "application/json")

    server = run(cut, scenario, retry_s=0.0)
    assert len(server.requests) == 1


def test_a_request_lost_once_while_the_server_stops_is_answered_by_the_next_one() -> None:
    calls = []

    async def first_lost(request: bytes, writer: asyncio.StreamWriter) -> None:
        calls.append(request)
        if len(calls) == 1:
            writer.transport.abort()
        else:
            await ok(request, writer)

    async def scenario(upstreams: Upstreams, url: str, server: Server) -> None:
        status, *_ = await upstreams.post(url, b"{}", "application/json")
        assert status == 200

    server = run(first_lost, scenario, retry_s=5.0)
    assert len(server.requests) == 2


@pytest.mark.parametrize(("concurrency", "expected"), [(1, 1), (2, 2), (0, 6)])
def test_concurrency_per_server_is_limited_and_the_rest_wait(concurrency: int, expected: int) -> None:
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        await ok(request, writer)

    async def scenario(upstreams: Upstreams, url: str, server: Server) -> None:
        answers = await asyncio.gather(*(upstreams.post(url, b"{}", "application/json") for _ in range(6)))
        assert [answer.status for answer in answers] == [200] * 6

    server = run(slow, scenario, concurrency=concurrency)
    assert server.max_in_flight == expected


def test_waiting_for_a_turn_counts_against_the_timeout() -> None:
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.3)
        await ok(request, writer)

    async def scenario(upstreams: Upstreams, url: str, server: Server) -> None:
        first, second = await asyncio.gather(
            upstreams.post(url, b"{}", "application/json"),
            upstreams.post(url, b"{}", "application/json"),
            return_exceptions=True,
        )
        assert not isinstance(first, BaseException) and first[0] == 200
        assert isinstance(second, UpstreamTimeout)

    run(slow, scenario, timeout_s=0.45, concurrency=1)
