"""What every HTTP service of ours checks before a route runs: the `Host` header, the body size, and
(on control endpoints) the platform's control token.

- `allowed_hosts` / `host_allowed`: a request whose `Host` is not one of the service's names is
  refused 400, so a web page in a browser on this machine cannot reach a service on loopback by
  pointing its own domain at 127.0.0.1 (DNS rebinding). The names: the compose service names, the
  loopback names (compose healthchecks, `make local`, tests), and EXTRA_ALLOWED_HOSTS. The port is
  not part of the match (each service listens on one). Starlette's TrustedHostMiddleware makes the
  same check, but answers in plain text, not in our error shape, and the gateway's raw-ASGI fast
  path needs it without a middleware layer: so one small function serves both.
- `GuardMiddleware`: the host check and a body limit (413) as plain ASGI middleware for the FastAPI
  services; the gateway does both on its own hot path (services/gateway/scoring.py) with the same
  `host_allowed`.
- `ControlToken` and `control_auth`: `Authorization: Bearer <token>` on the routes that change
  something (the orchestrator's retrain, rollback and alerts, the monitor's alerts), compared in
  constant time. The token lives in a file (`.secrets/control_token`, mounted as a compose secret),
  read again when it changes: rotating it needs no restart. A service keeps its `ControlToken` in
  `app.state.control_token`, so its routers, declared at import time, can require it.

Every refusal is in the error shape of contracts.errors.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from starlette.requests import Request

from contracts.errors import error_body
from contracts.settings import EnvSettings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Names every service answers to besides its compose service names: compose healthchecks and local
# mode call services by these.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
# The body limit of the FastAPI services (the gateway has GATEWAY_MAX_BODY_BYTES): an Alertmanager
# notification, a retrain request or a report form is a few kilobytes.
MAX_BODY_BYTES = 1024 * 1024
# Where the containers find the control token (docker-compose.yml, `secrets:`).
CONTROL_TOKEN_FILE = "/run/secrets/control_token"  # nosec B105: a path, not a secret


class GuardSettings(EnvSettings):
    """The Host names every HTTP service of ours answers to besides its own (a field of each
    service's settings)."""

    model_config = SettingsConfigDict(env_prefix="")

    extra_allowed_hosts: str = Field(
        "",
        description="extra Host names (no port) the gateway, reports, monitor and orchestrator answer to, "
        "comma-separated, e.g. myhost.example when BIND_ADDRESS publishes them (service names and "
        "localhost always work)",
    )


class ControlSettings(EnvSettings):
    """The control token's file (services with control endpoints)."""

    model_config = SettingsConfigDict(env_prefix="")

    control_token_file: str = Field(CONTROL_TOKEN_FILE, description="the file holding the control token")


def allowed_hosts(service_names: Iterable[str], extra: str = "") -> frozenset[bytes]:
    """The Host names (lower case, no port) a service answers to."""
    names = [*service_names, *LOOPBACK_NAMES, *extra.split(",")]
    return frozenset(name.strip().lower().encode("latin-1") for name in names if name.strip())


def host_allowed(host: bytes | None, allowed: frozenset[bytes]) -> bool:
    """Whether a raw `Host` header (`name`, `name:port`, `[v6]:port`) names one of `allowed`.
    A set lookup: cheap enough for the gateway's hot path."""
    if not host:
        return False
    name = host[: host.find(b"]") + 1] if host.startswith(b"[") else host.partition(b":")[0]
    return name.lower() in allowed


def refusal(status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> list[Message]:
    """The ASGI messages of an error answer in the shape of contracts.errors."""
    body = json.dumps(error_body(status, message)).encode()
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return [
        {"type": "http.response.start", "status": status, "headers": [*start_headers, *headers]},
        {"type": "http.response.body", "body": body},
    ]


async def answer(send: Send, messages: list[Message]) -> None:
    for message in messages:
        await send(message)


CLOSE = [(b"connection", b"close")]  # the unread rest of a refused body is not read


class GuardMiddleware:
    """ASGI middleware: 400 unless `Host` is allowed, 413 for a body over `max_body_bytes` (declared
    or streamed). The body of a request without Content-Length is read ahead (at most the limit)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[bytes], max_body_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.allowed = allowed
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if not host_allowed(headers.get(b"host"), self.allowed):
            await answer(send, refusal(400, "the Host header names no host this service answers to"))
            return
        too_large = f"the request body is larger than {self.max_body_bytes} bytes"
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await answer(send, refusal(400, "the Content-Length header is not a number"))
                return
            if int(length) > self.max_body_bytes:
                await answer(send, refusal(413, too_large, CLOSE))
                return
        elif b"transfer-encoding" in headers:
            body, more = b"", True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_body_bytes:
                    await answer(send, refusal(413, too_large, CLOSE))
                    return
            receive = replay(body, receive)
        await self.app(scope, receive, send)


def replay(body: bytes, receive: Receive) -> Receive:
    """`receive` that hands out `body` once, then what the server sends (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class ControlToken:
    """The platform's control token, read from its file, again whenever the file changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int] | None = None
        self._token = b""

    def current(self) -> bytes:
        """The token; ValueError naming the file when it is missing, unreadable or empty."""
        try:
            stat = self.path.stat()
            if (stat.st_mtime_ns, stat.st_size) != self._seen:
                token = self.path.read_bytes().strip()
                if not token:
                    raise ValueError(f"the control token file {self.path} is empty")
                self._token, self._seen = token, (stat.st_mtime_ns, stat.st_size)
        except OSError as exc:
            raise ValueError(f"cannot read the control token file {self.path}: {exc.strerror}") from None
        return self._token

    def matches(self, presented: str) -> bool:
        """Whether `presented` is the token, compared in constant time."""
        return secrets.compare_digest(presented.encode("utf-8", "replace"), self.current())


def control_auth(token: ControlToken | None = None) -> Callable[..., Any]:
    """A FastAPI dependency that refuses a request without the control token: 401 with
    `WWW-Authenticate: Bearer`, before the route's body is validated or anything is looked up.
    Declared as HTTP bearer security, so the OpenAPI description says which routes need it.
    `token`: the token to check; by default the app's own, `app.state.control_token`."""
    from fastapi import Depends, HTTPException
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    bearer = HTTPBearer(
        auto_error=False,
        scheme_name="control token",
        description="the platform's control token (.secrets/control_token): `Authorization: Bearer <token>`",
    )

    def require_control_token(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        expected: ControlToken = token if token is not None else request.app.state.control_token
        if credentials is None or not expected.matches(credentials.credentials):
            raise HTTPException(
                401,
                "this endpoint needs the platform's control token: send 'Authorization: Bearer <token>' "
                "(.secrets/control_token; make retrain and make rollback send it)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_control_token


CONTROL_ERRORS = {401: "no or a wrong control token (Authorization: Bearer <token>)"}
