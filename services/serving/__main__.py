"""`python -m services.serving`: wait for the model alias, serve it, follow it when it moves."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from contracts.logs import configure_logging
from contracts.settings import SettingsError
from services.serving import Settings
from services.serving.registry import alias_version, wait_for_alias
from services.serving.server import ModelServer, listen

log = logging.getLogger("serving")


def main() -> int:
    configure_logging("serving")
    try:
        settings = Settings()  # type: ignore[call-arg]
    except SettingsError as exc:
        print(f"serving: error: invalid settings: {exc}", file=sys.stderr)
        return 1
    # mlflow models serve starts uvicorn by name: the venv's bin directory must be on PATH.
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    # The launcher's own registry reads: the MLflow client retries a down tracking server for minutes
    # by default, during which a SIGTERM would wait; the watch loop retries on its own schedule.
    # (The model servers keep MLflow's defaults: their downloads deserve the retries.)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        listener = listen(settings)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror or exc)
        return 1
    version = wait_for_alias(settings, stopping)
    if version is None:
        return 0
    log.info("serving %s version %s (alias %s) on %s:%d", settings.model_name, version, settings.alias,
             settings.host, settings.port)  # fmt: skip
    server = ModelServer(settings, version, listener, env)
    if not server.wait_ready(settings.start_timeout_s, stopping):
        server.stop()
        if stopping.is_set():
            return 0
        log.error("version %s did not start (exit code %s)", version, server.proc.returncode)
        return 1
    failed: str | None = None  # a version that did not start: not retried while the alias names it
    while not stopping.wait(settings.watch_s):
        if server.proc.poll() is not None:
            log.error(
                "mlflow models serve of version %s exited with code %s",
                server.version,
                server.proc.returncode,
            )
            return server.proc.returncode or 1
        current = alias_version(settings)
        if current == server.version:  # the alias is back on what is served
            failed = None
        if current is None or current in (server.version, failed):
            continue
        log.info("alias %s moved from version %s to %s: starting it beside the running one",
                 settings.alias, server.version, current)  # fmt: skip
        new = ModelServer(settings, current, listener, env)
        if new.wait_ready(settings.start_timeout_s, stopping):
            server.stop()
            log.info("now serving version %s; version %s stopped", current, server.version)
            server, failed = new, None
        else:
            new.stop()
            if stopping.is_set():
                break
            failed = current
            log.error("version %s did not start (exit code %s); version %s keeps serving",
                      current, new.proc.returncode, server.version)  # fmt: skip
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
