"""`python -m services.serving`: wait for the model alias, serve it, follow it when it moves."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

from services.serving import Settings, alias_version, serve_command, wait_for_alias

log = logging.getLogger("serving")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s serving: %(message)s")
    settings = Settings()  # type: ignore[call-arg]
    # mlflow models serve starts uvicorn by name: the venv's bin directory must be on PATH.
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: object) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    version = wait_for_alias(settings)
    while not stopping.is_set():
        log.info("serving %s version %s (alias %s) on %s:%d", settings.model_name, version, settings.alias,
                 settings.host, settings.port)  # fmt: skip
        child = subprocess.Popen(serve_command(settings, version), env=env)
        while not stopping.wait(settings.watch_s):
            if child.poll() is not None:
                log.error("mlflow models serve exited with code %s", child.returncode)
                return child.returncode or 1
            current = alias_version(settings)
            if current is not None and current != version:
                log.info(
                    "alias %s moved from version %s to %s: restarting the server",
                    settings.alias,
                    version,
                    current,
                )
                child.terminate()
                child.wait(timeout=30)
                version = current
                break
    if child is not None:
        child.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
