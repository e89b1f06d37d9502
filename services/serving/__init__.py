"""Serve a registered model alias with `mlflow models serve`, once the alias exists.

Until the alias is set (the first training run has not finished yet), the launcher waits and says
what it waits for, instead of crashing in a restart loop. It then serves the alias's version and
keeps watching the alias. When the alias moves, the new version starts beside the old one and the
old one stops only once the new one is up: no request is refused. If the new version cannot start,
the old one keeps serving.

The launcher owns the listening socket and hands it to every `mlflow models serve` it starts, as
standard input (inetd style: `mlflow models serve` closes other inherited descriptors before it
runs uvicorn, and uvicorn takes `UVICORN_FD=0`). Both servers accept from it during a rollout, and
connections that arrive while none accepts wait in its backlog instead of being refused. One race
remains: a connection the old server accepted in the instant it stops, before reading its request,
is closed without an answer (uvicorn's shutdown closes connections with no request in progress;
seen once in a rollout under load). The gateway repeats such a request once
(services/gateway/upstream.py); a client calling a model server directly should do the same.

Readiness: a new server is ready once it answers on the shared socket. Each model server is started
with a default response header `X-Model-Version: <version>` (uvicorn's `--header`, set through
`UVICORN_HEADERS` like the socket through `UVICORN_FD`). The launcher sends `GET /ping` to the public
port on fresh connections until an answer carries the new version: the kernel gives each connection
to whichever server accepts first, so the old server's answers do not count and the next probe tries
again. uvicorn accepts only once the app, and so the model, has loaded. Alternatives ruled out:
- a private port per server: uvicorn, and so `mlflow models serve`, listens on exactly one socket
  (`--fd`, `--uds` or `--host/--port`), and it must be the shared one;
- `/ping` and `/version` do not tell servers apart (`/version` is the MLflow version);
- uvicorn's log lines change between versions and vanish with `UVICORN_LOG_LEVEL=warning`.
Failure is safe: without the header no answer matches, the new version counts as not started and the
old one keeps serving. The version names one server because the launcher never runs two servers of
one version. With `SERVING_WORKERS` > 1 the first worker to answer makes the server ready; the others
load the same model meanwhile and accept nothing before they have. Clients see the header too: it
names the version that answered, also during a rollout.

What is actually served is that header, not the alias (`contracts.models.served_version`): the
gateway follows it, so it labels predictions and checks signatures by the version that answers, and
the orchestrator's rollout watch waits for it. The launcher writes nothing to the registry: the
serving account only reads (services/access).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import subprocess
import sys
import threading
import time

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts.models import VERSION_HEADER, served_version
from contracts.registry import version_by_alias
from services.serving.settings import Settings

log = logging.getLogger(__name__)


def wait_for_alias(settings: Settings, stopping: threading.Event) -> str | None:
    """Block until `name@alias` exists and return its version, or None once `stopping` is set.
    Logs each reason for waiting."""
    client = MlflowClient(settings.mlflow.tracking_uri)
    last_reason = ""
    while not stopping.is_set():
        try:
            found = version_by_alias(client, settings.model_name, settings.alias)
            if found is not None:
                return str(found.version)
            reason = (
                f"waiting for models:/{settings.model_name}@{settings.alias}: "
                "no such model or alias yet (train a model: make train)"
            )
        except MlflowException as exc:  # MLflow reports an unreachable server as its own exception
            reason = f"waiting for tracking server {settings.mlflow.tracking_uri}: {first_line(exc.message)}"
        except OSError as exc:  # connection refused, DNS: the tracking server is not up yet
            reason = f"waiting for tracking server {settings.mlflow.tracking_uri}: {exc}"
        if reason != last_reason:
            log.info(reason)
            last_reason = reason
        stopping.wait(settings.poll_s)
    return None


def first_line(text: str, limit: int = 300) -> str:
    return (text.strip().splitlines() or [""])[0][:limit]


def alias_version(settings: Settings) -> str | None:
    """The alias's version now, or None when it cannot be read (server down, alias gone)."""
    try:
        found = version_by_alias(
            MlflowClient(settings.mlflow.tracking_uri), settings.model_name, settings.alias
        )
    except (MlflowException, OSError) as exc:
        log.warning("cannot read %s@%s: %s", settings.model_name, settings.alias, exc)
        return None
    if found is None:
        log.warning("%s@%s is not set (any more): the running version keeps serving",
                    settings.model_name, settings.alias)  # fmt: skip
    return None if found is None else str(found.version)


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
