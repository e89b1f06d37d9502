"""`python -m services.serving`: wait for the model alias, then become `mlflow models serve`."""

from __future__ import annotations

import logging
import os
import shutil
import sys

from services.serving import Settings, serve_command, wait_for_alias


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s serving: %(message)s")
    settings = Settings()  # type: ignore[call-arg]
    version = wait_for_alias(settings)
    logging.info(
        "serving %s version %s (alias %s) on %s:%d",
        settings.model_name,
        version,
        settings.alias,
        settings.host,
        settings.port,
    )
    command = serve_command(settings)
    # mlflow models serve starts uvicorn by name: the venv's bin directory must be on PATH.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    executable = shutil.which(command[0]) or command[0]
    os.execvp(executable, command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
