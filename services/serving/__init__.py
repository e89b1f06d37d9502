"""Serve a registered model alias with `mlflow models serve`, once the alias exists.

Until the alias is set (the first training run has not finished yet), the launcher waits and says
what it waits for, instead of crashing in a restart loop. It then serves the alias's version and
keeps watching the alias. When the alias moves, the new version starts beside the old one and the
old one stops only once the new one is up: no request is refused. If the new version cannot start,
the old one keeps serving.

The launcher owns the listening socket and hands it to every `mlflow models serve` it starts, as
standard input (inetd style: `mlflow models serve` closes other inherited descriptors before it
runs uvicorn, and uvicorn takes `UVICORN_FD=0`). Both servers accept from it during a rollout, and
connections that arrive while none accepts wait in its backlog instead of being refused.

What is actually served is written to the registered model as tags (`contracts/models.py`): the
gateway follows them, so it labels predictions and checks signatures by the version that answers,
not the one the alias names; the MLflow UI shows both.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import Field
from pydantic_settings import BaseSettings

from contracts.models import PRODUCTION, served_error_tag, served_tag
from contracts.registry import version_by_alias

log = logging.getLogger(__name__)


class Settings(BaseSettings):
    tracking_uri: str = Field(alias="MLFLOW_TRACKING_URI")
    model_name: str = Field(alias="SERVING_MODEL_NAME")
    alias: str = Field(PRODUCTION, alias="SERVING_ALIAS")
    host: str = Field("0.0.0.0", alias="SERVING_HOST")
    port: int = Field(8080, alias="SERVING_PORT")
    workers: int = Field(1, alias="SERVING_WORKERS")
    poll_s: float = Field(5.0, alias="SERVING_POLL_S")
    # How often a running server checks whether its alias moved.
    watch_s: float = Field(15.0, alias="SERVING_WATCH_S")
    # How long a new version may take to load before the launcher gives up on it.
    start_timeout_s: float = Field(600.0, gt=0, alias="SERVING_START_TIMEOUT_S")


def wait_for_alias(settings: Settings, stopping: threading.Event) -> str | None:
    """Block until `name@alias` exists and return its version, or None once `stopping` is set.
    Logs each reason for waiting."""
    client = MlflowClient(settings.tracking_uri)
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
            reason = f"waiting for tracking server {settings.tracking_uri}: {first_line(exc.message)}"
        except OSError as exc:  # connection refused, DNS: the tracking server is not up yet
            reason = f"waiting for tracking server {settings.tracking_uri}: {exc}"
        if reason != last_reason:
            log.info(reason)
            last_reason = reason
        stopping.wait(settings.poll_s)
    return None


def first_line(text: str, limit: int = 300) -> str:
    return (text.strip().splitlines() or [""])[0][:limit]


def record_served(settings: Settings, version: str, error: str | None) -> bool:
    """Write `served.<alias>` (and `served.<alias>.error`, or remove it); False if the registry
    could not be written (tried again later)."""
    client, name = MlflowClient(settings.tracking_uri), settings.model_name
    error_tag = served_error_tag(settings.alias)
    try:
        client.set_registered_model_tag(name, served_tag(settings.alias), version)
        if error:
            client.set_registered_model_tag(name, error_tag, error)
        elif error_tag in client.get_registered_model(name).tags:
            client.delete_registered_model_tag(name, error_tag)
    except (MlflowException, OSError) as exc:
        log.warning("cannot record the served version of %s in the registry: %s", name, exc)
        return False
    return True


def alias_version(settings: Settings) -> str | None:
    """The alias's version now, or None when it cannot be read (server down, alias gone)."""
    try:
        found = version_by_alias(MlflowClient(settings.tracking_uri), settings.model_name, settings.alias)
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


# What uvicorn logs once a worker has loaded the app (the model) and is about to accept.
READY_LINE = b"Application startup complete"


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


class ModelServer:
    """One `mlflow models serve` of one version, accepting on the launcher's socket. Its log lines go
    to the launcher's stderr, prefixed with the version."""

    def __init__(
        self, settings: Settings, version: str, listener: socket.socket, env: dict[str, str]
    ) -> None:
        self.version = version
        self._workers = settings.workers
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            serve_command(settings, version),
            env={**env, "UVICORN_FD": "0"},
            stdin=listener.fileno(),
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._forward_log, name=f"v{version}-log", daemon=True).start()

    def _forward_log(self) -> None:
        assert self.proc.stderr is not None
        prefix, started = f"[v{self.version}] ".encode(), 0
        for line in self.proc.stderr:
            sys.stderr.buffer.write(prefix + line)
            sys.stderr.flush()
            if READY_LINE in line:
                started += 1
                if started >= self._workers:
                    self._ready.set()

    def wait_ready(self, timeout_s: float, stopping: threading.Event) -> bool:
        """True once every worker has loaded the model; False if it exited, took longer than
        `timeout_s`, or the launcher is stopping."""
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None or stopping.is_set() or time.monotonic() > deadline:
                return False
        return True

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
