"""The serving launcher's readiness probe: a new model server is ready once it answers on the shared
socket with its own version, whatever it logs. Real uvicorn processes on the launcher's socket; a
stub app stands in for the model so that this runs in seconds."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import services.serving.server as serving
from services.local import child_env
from services.serving import Settings
from services.serving.server import ModelServer, answers_as, listen, probe_url
from tests.conftest import free_port

STUB_APP = """
import os, time
time.sleep(float(os.environ.get("STUB_LOAD_S", "0")))  # "loading the model"
if os.environ.get("STUB_FAIL"):
    raise RuntimeError("this version cannot load")

async def app(scope, receive, send):
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
"""


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env(
        dict(
            MLFLOW_TRACKING_URI="http://unused",
            SERVING_MODEL_NAME="m",
            SERVING_HOST="127.0.0.1",
            SERVING_PORT=free_port(),
        )
    )


@pytest.fixture
def stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ModelServer]]:
    """`mlflow models serve` replaced by uvicorn serving the stub app; servers stopped afterwards."""
    (tmp_path / "stub.py").write_text(STUB_APP)
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path), "stub:app"]
    monkeypatch.setattr(serving, "serve_command", lambda _settings, _version: command)
    started: list[ModelServer] = []
    yield started
    for server in started:
        server.stop(10)


def start(
    stub: list[ModelServer], settings: Settings, version: str, listener: socket.socket, **env: str
) -> ModelServer:
    # Nothing at info level: uvicorn does not log "Application startup complete" at all.
    server = ModelServer(settings, version, listener, child_env({"UVICORN_LOG_LEVEL": "warning", **env}))
    stub.append(server)
    return server


def test_a_new_server_is_ready_when_it_answers_although_it_logs_nothing(
    stub: list[ModelServer], settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    never = threading.Event()
    with listen(settings) as listener:
        address = probe_url(listener)
        old = start(stub, settings, "1", listener)
        assert old.wait_ready(60, never)
        new = start(stub, settings, "2", listener, STUB_LOAD_S="2")
        assert not answers_as(address, "2", timeout_s=1)  # still loading: the old one answers
        assert new.wait_ready(60, never)
        old.stop(10)
        assert answers_as(address, "2") and not answers_as(address, "1")
    assert "startup complete" not in capfd.readouterr().err


def test_a_server_that_cannot_load_is_never_ready(stub: list[ModelServer], settings: Settings) -> None:
    with listen(settings) as listener:
        broken = start(stub, settings, "3", listener, STUB_FAIL="1")
        assert not broken.wait_ready(60, threading.Event())
        assert broken.proc.poll() is not None


def test_stopping_ends_the_wait(stub: list[ModelServer], settings: Settings) -> None:
    stopping = threading.Event()
    stopping.set()
    with listen(settings) as listener:
        assert not start(stub, settings, "4", listener, STUB_LOAD_S="30").wait_ready(60, stopping)


def test_the_probe_needs_the_version_header_and_a_200(settings: Settings) -> None:
    address = f"http://127.0.0.1:{settings.port}"
    assert not answers_as(address, "1", timeout_s=1)  # nothing listens
    with listen(settings) as listener:
        assert probe_url(listener) == address
        answers: list[bytes] = [
            b"HTTP/1.1 200 OK\r\nX-Model-Version: 1\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-Model-Version: 2\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 503 Service Unavailable\r\nX-Model-Version: 2\r\nContent-Length: 0\r\n\r\n",
        ]

        def answer() -> None:
            for raw in answers:
                connection, _ = listener.accept()
                with connection:
                    connection.recv(4096)
                    connection.sendall(raw)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        assert [answers_as(address, "2") for _ in answers] == [False, True, False, False]
        thread.join(5)


class FakeListener:
    def __init__(self, family: socket.AddressFamily, host: str) -> None:
        self.family, self._host = family, host

    def getsockname(self) -> tuple[str, int]:
        return self._host, 5001


@pytest.mark.parametrize(
    ("family", "host", "probed"),
    [
        (socket.AF_INET, "0.0.0.0", "http://127.0.0.1:5001"),
        (socket.AF_INET6, "::", "http://[::1]:5001"),
        (socket.AF_INET, "10.1.2.3", "http://10.1.2.3:5001"),
    ],
)
def test_a_listener_on_every_address_is_probed_on_loopback(
    family: socket.AddressFamily, host: str, probed: str
) -> None:
    assert probe_url(FakeListener(family, host)) == probed  # type: ignore[arg-type]
