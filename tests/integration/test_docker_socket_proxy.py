"""The Docker socket proxy (docker-socket-proxy/haproxy.cfg) in a real HAProxy: on its Unix socket
the orchestrator's Engine API calls pass, everything else is answered 403 and never reaches the
engine; its health port passes the engine's ping only.

Behind the proxy is NOT Docker but ENGINE_STANDIN below: a small HTTP server on a Unix socket that
records every request and answers the few calls the docker SDK needs with minimal JSON. Why not the
real engine: `make test` needs no Docker engine (infra/test-tools.sh), and a test must neither start
containers nor pull on the machine it runs on. What this does not prove: that the real engine
accepts the calls (the closed loop in `make e2e` runs them through the proxy against Docker).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from services.orchestrator import Settings
from services.orchestrator.runner import DockerRunner, Job
from tests.conftest import ROOT, free_port, require

CONFIG = ROOT / "docker-socket-proxy" / "haproxy.cfg"
CONTAINER_ID = "c0ffee" * 10 + "abcd"
API = "/v1.41"
RUN_ID = "0123456789abcdef0123456789abcdef"


class EngineStandin(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """ENGINE STAND-IN, not Docker: records (method, path) of every request that reaches it and
    answers 2xx to anything, so only the proxy decides what is refused."""

    daemon_threads = True

    def __init__(self, path: Path) -> None:
        self.seen: list[tuple[str, str]] = []
        super().__init__(str(path), EngineHandler)


class EngineHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EngineStandin

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # a Unix socket has no client address to log

    def answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        self.server.seen.append((self.command, path))
        bare = path.removeprefix(API)
        if bare == "/_ping":
            self.answer(200, b"OK", "text/plain")
        elif bare == "/version":
            self.answer(200, json.dumps({"ApiVersion": "1.41", "Version": "20.10.24"}).encode())
        elif bare.startswith("/images/"):
            self.answer(200, json.dumps({"Id": "sha256:" + "ab" * 32, "RepoDigests": []}).encode())
        elif bare == "/containers/create":
            self.answer(201, json.dumps({"Id": CONTAINER_ID, "Warnings": []}).encode())
        elif bare.endswith("/json"):
            state = {"Id": CONTAINER_ID, "Name": "/trainer", "Config": {"Tty": False}, "State": {}}
            self.answer(200, json.dumps(state).encode())
        elif bare.endswith("/wait"):
            self.answer(200, json.dumps({"StatusCode": 0}).encode())
        elif bare.endswith("/logs"):
            line = b"trained\n"  # one frame of Docker's multiplexed stream: stdout, length, bytes
            frame = b"\x01\x00\x00\x00" + len(line).to_bytes(4, "big") + line
            self.answer(200, frame, "application/vnd.docker.raw-stream")
        elif self.command == "DELETE" or bare.endswith(("/start", "/stop")):
            self.answer(204, b"")
        else:
            self.answer(200, b"{}")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = handle_any


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket, sending the request line exactly as given (no path clean-up)."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self.socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.socket_path)


class Proxy:
    """The running HAProxy: its Unix socket (the orchestrator's side), its health port, the engine."""

    def __init__(self, socket_path: Path, health: str, engine: EngineStandin) -> None:
        self.socket_path, self.health, self.engine = socket_path, health, engine

    def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection = UnixConnection(self.socket_path)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            return answer.status, answer.read()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """HAProxy with our config on a Unix socket and a loopback health port, before the engine
    stand-in."""
    require("haproxy", shutil.which("haproxy"))
    base = tmp_path_factory.mktemp("socket-proxy")
    engine = EngineStandin(base / "engine.sock")
    threading.Thread(target=engine.serve_forever, daemon=True).start()
    health, socket_path = f"127.0.0.1:{free_port()}", base / "api" / "docker.sock"
    socket_path.parent.mkdir()
    env = {
        **os.environ,
        "DOCKER_PROXY_SOCKET": str(socket_path),
        "DOCKER_PROXY_HEALTH": health,
        "DOCKER_PROXY_ENGINE": str(base / "engine.sock"),
    }
    log = (base / "haproxy.log").open("w")
    command = ["haproxy", "-db", "-f", str(CONFIG)]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"haproxy exited: {(base / 'haproxy.log').read_text()}"
            with socket.socket() as sock:
                if (
                    socket_path.exists()
                    and sock.connect_ex(("127.0.0.1", int(health.rsplit(":", 1)[1]))) == 0
                ):
                    break
            assert time.monotonic() < deadline, "haproxy did not listen within 20 s"
            time.sleep(0.1)
        yield Proxy(socket_path, health, engine)
    finally:
        proc.terminate()
        proc.wait(10)
        engine.shutdown()
        engine.server_close()
        log.close()


def test_the_config_is_valid_for_haproxy() -> None:
    require("haproxy", shutil.which("haproxy"))
    checked = subprocess.run(["haproxy", "-c", "-f", str(CONFIG)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_socket_is_open_to_whoever_reaches_its_folder(proxy: Proxy) -> None:
    """Mode 666: who may connect is decided by the folder (the docker-api volume, 0770)."""
    assert proxy.socket_path.stat().st_mode & 0o777 == 0o666


def test_the_orchestrator_runs_a_trainer_through_the_proxy(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DockerRunner with the real docker SDK, configured as in docker-compose.yml (DOCKER_HOST):
    every call it makes for a retraining passes the proxy."""
    engine = proxy.engine
    monkeypatch.setenv("DOCKER_HOST", f"unix://{proxy.socket_path}")
    engine.seen.clear()
    settings = Settings.from_env(
        dict(
            MLFLOW_TRACKING_URI="http://127.0.0.1:1",
            MONITORING_DB_URI="postgresql://u@127.0.0.1:1/monitoring",
            TRAINER_IMAGE="mlops/trainer:1.0",
            TRAINER_NETWORK="mlops_default",
        )
    )
    outcome = DockerRunner(settings).run(Job(RUN_ID, {"target": "latency_ms", "trigger": "alert:x"}))
    assert outcome.exit_code == 0 and outcome.logs == "trained\n", outcome
    calls = {(method, path.removeprefix(API)) for method, path in engine.seen}
    container = f"/containers/{CONTAINER_ID}"
    assert calls == {
        ("GET", "/version"),
        ("GET", "/images/mlops/trainer:1.0/json"),
        ("POST", "/containers/create"),
        ("GET", f"{container}/json"),
        ("POST", f"{container}/start"),
        ("POST", f"{container}/wait"),
        ("GET", f"{container}/logs"),
        ("DELETE", container),
    }, calls


ALLOWED = [
    ("GET", "/_ping"),
    ("HEAD", "/_ping"),
    ("GET", "/version"),
    ("GET", f"{API}/version"),
    ("GET", f"{API}/images/mlops/trainer:1.0/json"),
    ("POST", f"{API}/containers/create?name=x"),
    ("POST", "/containers/create"),
    ("GET", f"{API}/containers/{CONTAINER_ID}/json"),
    ("GET", f"{API}/containers/{CONTAINER_ID}/logs?stdout=1"),
    ("POST", f"{API}/containers/{CONTAINER_ID}/start"),
    ("POST", f"{API}/containers/{CONTAINER_ID}/wait"),
    ("POST", f"{API}/containers/{CONTAINER_ID}/stop?t=10"),
    ("DELETE", f"{API}/containers/{CONTAINER_ID}?force=True"),
]

REFUSED = [
    # Into or out of other containers: exec, attach, files, export, commit.
    ("POST", f"{API}/containers/{CONTAINER_ID}/exec"),
    ("POST", f"{API}/exec/{CONTAINER_ID}/start"),
    ("POST", f"{API}/containers/{CONTAINER_ID}/attach?stream=1"),
    ("GET", f"{API}/containers/{CONTAINER_ID}/archive?path=/etc"),
    ("PUT", f"{API}/containers/{CONTAINER_ID}/archive?path=/"),
    ("GET", f"{API}/containers/{CONTAINER_ID}/export"),
    ("POST", f"{API}/commit?container={CONTAINER_ID}"),
    ("POST", f"{API}/containers/{CONTAINER_ID}/update"),
    ("POST", f"{API}/containers/{CONTAINER_ID}/kill"),
    ("POST", f"{API}/containers/{CONTAINER_ID}/restart"),
    ("POST", f"{API}/containers/prune"),
    # Listing and reading the host's state.
    ("GET", f"{API}/containers/json"),
    ("GET", f"{API}/info"),
    ("GET", f"{API}/system/df"),
    ("GET", f"{API}/events"),
    # Images: pull, build, load, push, delete.
    ("POST", f"{API}/images/create?fromImage=alpine"),
    ("POST", f"{API}/build"),
    ("POST", f"{API}/images/load"),
    ("POST", f"{API}/images/mlops/trainer:1.0/push"),
    ("POST", f"{API}/images/mlops/trainer:1.0/tag?repo=x"),
    ("DELETE", f"{API}/images/mlops/trainer:1.0"),
    # Volumes, networks, swarm, plugins, secrets, the session and distribution endpoints.
    ("POST", f"{API}/volumes/create"),
    ("GET", f"{API}/volumes"),
    ("POST", f"{API}/networks/create"),
    ("POST", f"{API}/networks/mlops_default/connect"),
    ("POST", f"{API}/swarm/init"),
    ("POST", f"{API}/services/create"),
    ("POST", f"{API}/plugins/pull"),
    ("GET", f"{API}/secrets"),
    ("POST", f"{API}/session"),
    ("GET", f"{API}/distribution/alpine/json"),
    ("POST", f"{API}/auth"),
    # Allowed paths with the wrong method.
    ("GET", f"{API}/containers/create"),
    ("POST", f"{API}/version"),
    ("DELETE", f"{API}/images/mlops/trainer:1.0/json"),
    ("PUT", f"{API}/containers/{CONTAINER_ID}/start"),
    ("POST", f"{API}/containers/{CONTAINER_ID}/logs"),
    ("DELETE", f"{API}/containers/{CONTAINER_ID}/json"),
    # Allowed paths spelled so the engine might read them as another endpoint.
    ("GET", f"{API}/containers/{CONTAINER_ID}/../../info"),
    ("GET", f"{API}/containers/x%2F..%2F..%2Finfo/json"),
    ("POST", f"{API}//containers/create"),
    ("GET", f"{API}/images/%2E%2E/json"),
    ("GET", f"{API}/images/x/../../containers/json"),
    ("GET", f"{API}/images/x//json"),
    ("GET", f"{API}/images/x%2F..%2F..%2Finfo/json"),
    ("POST", "/v1.41.x/containers/create"),
    ("POST", f"/api{API}/containers/create"),
]


@pytest.mark.parametrize(("method", "path"), ALLOWED, ids=[f"{m} {p}" for m, p in ALLOWED])
def test_the_calls_the_orchestrator_makes_pass(proxy: Proxy, method: str, path: str) -> None:
    proxy.engine.seen.clear()
    status, body = proxy.send(method, path)
    assert status < 300, (status, body)
    assert proxy.engine.seen == [(method, path.split("?", 1)[0])]


@pytest.mark.parametrize(("method", "path"), REFUSED, ids=[f"{m} {p}" for m, p in REFUSED])
def test_everything_else_is_refused_before_the_engine(proxy: Proxy, method: str, path: str) -> None:
    proxy.engine.seen.clear()
    status, body = proxy.send(method, path)
    assert status == 403, (status, body)
    assert "refused by the Docker socket proxy" in json.loads(body)["message"]
    assert proxy.engine.seen == []


def test_the_health_port_passes_the_ping_only(proxy: Proxy) -> None:
    """In the loopback stack 127.0.0.1:2375 is on the host: it must open nothing but the ping."""
    host, port = proxy.health.rsplit(":", 1)
    for method, path, expected in [
        ("GET", "/_ping", 200),
        ("GET", f"{API}/version", 403),
        ("POST", f"{API}/containers/create", 403),
        ("GET", f"{API}/containers/json", 403),
    ]:
        proxy.engine.seen.clear()
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request(method, path)
        assert connection.getresponse().status == expected, (method, path)
        connection.close()
        assert proxy.engine.seen == ([(method, path)] if expected == 200 else [])


def test_a_privileged_container_create_passes_the_proxy(proxy: Proxy) -> None:
    """What the proxy cannot filter (docs/closed-loop.md): request bodies. A privileged container
    with the host's root mounted is the same POST /containers/create; only the orchestrator's policy
    (DockerRunner.check, tests/unit/test_orchestrator.py) refuses it."""
    proxy.engine.seen.clear()
    body = {"Image": "alpine", "HostConfig": {"Privileged": True, "Binds": ["/:/host"]}}
    status, _ = proxy.send("POST", f"{API}/containers/create", json.dumps(body).encode())
    assert status == 201
    assert proxy.engine.seen == [("POST", f"{API}/containers/create")]
