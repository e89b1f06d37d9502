"""One `mlflow models serve` per version on the launcher's shared socket, and the probe that tells
which version answers (the design and the alternatives ruled out: this package's docstring)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import subprocess
import sys
import threading
import time

from contracts.models import VERSION_HEADER, served_version
from services.serving import Settings

log = logging.getLogger(__name__)


def serve_command(settings: Settings, version: str) -> list[str]:
    """`mlflow models serve` of one pinned version (dependencies are baked in: --env-manager local)."""
    return [
        "mlflow", "models", "serve",
        "--model-uri", f"models:/{settings.model_name}/{version}",
        "--env-manager", "local",
        "--host", settings.host,
        "--port", str(settings.port),
        "--workers", str(settings.workers),
    ]  # fmt: skip


PROBE_INTERVAL_S = 0.2


# A probe waits this long for an answer: on a first start it sits in the backlog until the server
# accepts, so a longer wait means fewer abandoned connections for the server to accept later.
PROBE_TIMEOUT_S = 5.0


def listen(settings: Settings) -> socket.socket:
    """The listening socket every model server of this launcher accepts from.

    TCP_NODELAY is set here because uvicorn wraps an inherited descriptor as a UNIX socket and so
    does not set it on the connections it accepts (accepted sockets inherit it from the listener
    on Linux). Without it, uvicorn's two writes per answer (head, then body) meet the client's
    delayed ACK: up to 40 ms more per request.
    """
    listener = socket.create_server((settings.host, settings.port), backlog=1024)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.set_inheritable(True)
    return listener


def probe_url(listener: socket.socket) -> str:
    """Where the launcher reaches its own listening socket: loopback when it listens on all addresses."""
    host, port = listener.getsockname()[:2]
    if ipaddress.ip_address(host).is_unspecified:
        host = "::1" if listener.family == socket.AF_INET6 else "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def answers_as(url: str, version: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when the model server of `version` answers `GET /ping` on a fresh connection to `url`
    with 200; False for another server's answer or no answer."""
    return served_version(url, timeout_s) == version


class ModelServer:
    """One `mlflow models serve` of one version, accepting on the launcher's socket. Its log lines go
    to the launcher's stderr, prefixed with the version; every answer carries `X-Model-Version`."""

    def __init__(
        self, settings: Settings, version: str, listener: socket.socket, env: dict[str, str]
    ) -> None:
        self.version = version
        self._probe = probe_url(listener)
        self.proc = subprocess.Popen(
            serve_command(settings, version),
            env={**env, "UVICORN_FD": "0", "UVICORN_HEADERS": f"{VERSION_HEADER}:{version}"},
            stdin=listener.fileno(),
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._forward_log, name=f"v{version}-log", daemon=True).start()

    def _forward_log(self) -> None:
        assert self.proc.stderr is not None
        prefix = f"[v{self.version}] ".encode()
        for line in self.proc.stderr:
            sys.stderr.buffer.write(prefix + line)
            sys.stderr.flush()

    def wait_ready(self, timeout_s: float, stopping: threading.Event) -> bool:
        """True once this server answers on the shared socket (it has loaded the model); False if it
        exited, took longer than `timeout_s`, or the launcher is stopping."""
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and not stopping.is_set() and time.monotonic() < deadline:
            if answers_as(self._probe, self.version):
                return True
            stopping.wait(PROBE_INTERVAL_S)
        return False

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (uvicorn finishes the requests it has), SIGKILL after `timeout_s`."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("version %s did not stop in %.0f s: killing it", self.version, timeout_s)
                self.proc.kill()
                self.proc.wait()
