"""Reading the model registry with one error policy: what counts as "not there (yet)".

MLflow answers an unknown model with RESOURCE_DOES_NOT_EXIST, but a known model whose alias is not
set with INVALID_PARAMETER_VALUE; both mean "absent" here, so every component waits or skips the
same way. Anything else (the tracking server down, a 5xx) raises: the caller decides whether to
retry, and says that the server, not the model, is missing.
"""

from __future__ import annotations

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

# MLflow error codes meaning "no such model, alias or run".
ABSENT_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"})


def is_absent(exc: MlflowException) -> bool:
    """True when the registry said the thing asked for does not exist (as opposed to failing)."""
    return exc.error_code in ABSENT_CODES


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version behind `name@alias`, or None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if is_absent(exc):
            return None
        raise
