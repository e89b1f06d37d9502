"""contracts.guard: the Host check, the body limit and the control token, on a small FastAPI app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

from contracts.errors import ErrorBody, install_error_handlers
from contracts.guard import (
    ControlToken,
    GuardMiddleware,
    allowed_hosts,
    control_auth,
    host_allowed,
)

ALLOWED = allowed_hosts(["monitor"], " example.org , ,Other.Example")


@pytest.mark.parametrize(
    "host, allowed",
    [
        (b"monitor", True),
        (b"monitor:8001", True),
        (b"localhost:8001", True),
        (b"127.0.0.1", True),
        (b"127.0.0.1:9", True),
        (b"[::1]:8001", True),
        (b"LOCALHOST", True),
        (b"example.org:443", True),
        (b"other.example", True),
        (b"attacker.example", False),
        (b"monitor.attacker.example", False),
        (b"127.0.0.2", False),
        (b"[::2]:8001", False),
        (b"", False),
        (None, False),
    ],
)
def test_host_names(host: bytes | None, allowed: bool) -> None:
    assert host_allowed(host, ALLOWED) is allowed


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "control_token"
    path.write_text("s3cret-token\n")
    return path


@pytest.fixture
def client(token_file: Path) -> Iterator[TestClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(GuardMiddleware, allowed=ALLOWED, max_body_bytes=100)

    @app.post("/echo")
    def echo(body: dict[str, str]) -> dict[str, str]:
        return body

    @app.post("/control", dependencies=[Depends(control_auth(ControlToken(token_file)))])
    def control(body: dict[str, str]) -> dict[str, str]:
        return body

    with TestClient(app, base_url="http://localhost:8001", raise_server_exceptions=False) as client:
        yield client


def refused(answer: Any, status: int, code: str) -> bool:
    assert answer.status_code == status, answer.text
    return ErrorBody.model_validate(answer.json()).error_code == code


def test_a_foreign_host_is_refused_in_the_error_shape(client: TestClient) -> None:
    answer = client.post("/echo", json={"a": "b"}, headers={"Host": "rebound.attacker.example"})
    assert refused(answer, 400, "MALFORMED_REQUEST")
    assert "Host" in answer.json()["message"]
    assert client.post("/echo", json={"a": "b"}, headers={"Host": "monitor:8001"}).json() == {"a": "b"}


def test_a_body_over_the_limit_is_413_declared_or_streamed(client: TestClient) -> None:
    big = {"a": "x" * 200}
    assert refused(client.post("/echo", json=big), 413, "TOO_LARGE")

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
        yield b'{"a": "'
        yield b"x" * 200
        yield b'"}'

    streamed = client.post("/echo", content=chunks(), headers={"Content-Type": "application/json"})
    assert refused(streamed, 413, "TOO_LARGE")

    def small() -> Iterator[bytes]:
        yield b'{"a": '
        yield b'"b"}'

    answer = client.post("/echo", content=small(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.json() == {"a": "b"}


def test_control_routes_need_the_token_before_the_body_is_validated(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        for body in ({"a": "b"}, {"a": 1}):
            answer = client.post("/control", json=body, headers=headers)
            assert refused(answer, 401, "UNAUTHENTICATED")
            assert answer.headers["www-authenticate"] == "Bearer"
    good = {"Authorization": "Bearer s3cret-token"}
    assert client.post("/control", json={"a": "b"}, headers=good).json() == {"a": "b"}
    assert client.post("/control", json={"a": 1}, headers=good).status_code == 422
    described = client.get("/openapi.json").json()
    assert described["paths"]["/control"]["post"]["security"] == [{"control token": []}]
    assert "security" not in described["paths"]["/echo"]["post"]


def test_an_unreadable_or_empty_token_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the control token file .*missing"):
        ControlToken(tmp_path / "missing").current()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="control token file .*empty is empty"):
        ControlToken(tmp_path / "empty").current()
