"""What the launcher reads from the registry: the version its alias names, waited for at start and
re-read while serving (the serving account only reads)."""

from __future__ import annotations

import logging
import threading

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts.registry import version_by_alias
from services.serving import Settings

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
