"""Serve a registered model alias with `mlflow models serve`, once the alias exists.

Until the alias is set (the first training run has not finished yet), the launcher waits and says
what it waits for, instead of crashing in a restart loop. It then serves the alias's version and
keeps watching the alias: when it moves, the server is restarted on the new version (a short
gap; zero-downtime rollout is the orchestrator's job).
"""

from __future__ import annotations

import logging
import time

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import Field
from pydantic_settings import BaseSettings

log = logging.getLogger(__name__)


class Settings(BaseSettings):
    tracking_uri: str = Field(alias="MLFLOW_TRACKING_URI")
    model_name: str = Field(alias="SERVING_MODEL_NAME")
    alias: str = Field("production", alias="SERVING_ALIAS")
    host: str = Field("0.0.0.0", alias="SERVING_HOST")
    port: int = Field(8080, alias="SERVING_PORT")
    workers: int = Field(1, alias="SERVING_WORKERS")
    poll_s: float = Field(5.0, alias="SERVING_POLL_S")
    # How often a running server checks whether its alias moved.
    watch_s: float = Field(15.0, alias="SERVING_WATCH_S")


def wait_for_alias(settings: Settings, max_wait_s: float | None = None) -> str:
    """Block until `name@alias` exists; return its version. Logs each reason for waiting."""
    client = MlflowClient(settings.tracking_uri)
    started, last_reason = time.monotonic(), ""
    while True:
        try:
            version = client.get_model_version_by_alias(settings.model_name, settings.alias).version
            return str(version)
        except MlflowException as exc:
            reason = (
                f"waiting for models:/{settings.model_name}@{settings.alias}: "
                f"{exc.error_code} (train a model: make train)"
            )
        except OSError as exc:  # connection refused, DNS: the tracking server is not up yet
            reason = f"waiting for tracking server {settings.tracking_uri}: {exc}"
        if reason != last_reason:
            log.info(reason)
            last_reason = reason
        if max_wait_s is not None and time.monotonic() - started > max_wait_s:
            raise TimeoutError(reason)
        time.sleep(settings.poll_s)


def alias_version(settings: Settings) -> str | None:
    """The alias's version now, or None when it cannot be read (server down, alias gone)."""
    try:
        client = MlflowClient(settings.tracking_uri)
        return str(client.get_model_version_by_alias(settings.model_name, settings.alias).version)
    except (MlflowException, OSError) as exc:
        log.warning("cannot read %s@%s: %s", settings.model_name, settings.alias, exc)
        return None


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
