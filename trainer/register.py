"""Model registry: register the best candidate, move `staging`, promote to `production` if better."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts.models import PRODUCTION, STAGING
from contracts.registry import version_by_alias
from trainer.evaluate import rmse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """Whether a candidate replaces production, and why (recorded on the model version)."""

    promote: bool
    reason: str
    candidate_rmse: float
    production_rmse: float | None
    production_version: str | None


def decide(
    candidate_rmse: float, production_rmse: float | None, production_version: str | None = None
) -> Decision:
    """Promote when there is no production model or the candidate's test RMSE is strictly lower."""
    if production_rmse is None:
        reason = "no production version yet"
        return Decision(True, reason, candidate_rmse, None, production_version)
    if candidate_rmse < production_rmse:
        reason = (
            f"test RMSE {candidate_rmse:.4f} beats production v{production_version} "
            f"({production_rmse:.4f}) on the same test data"
        )
        return Decision(True, reason, candidate_rmse, production_rmse, production_version)
    reason = (
        f"test RMSE {candidate_rmse:.4f} does not beat production v{production_version} "
        f"({production_rmse:.4f}) on the same test data"
    )
    return Decision(False, reason, candidate_rmse, production_rmse, production_version)


def production_rmse(
    client: MlflowClient, name: str, x_test: pd.DataFrame, y_test: pd.Series
) -> tuple[float | None, str | None]:
    """Score the current production version on this session's test data."""
    current = version_by_alias(client, name, PRODUCTION)
    if current is None:
        return None, None
    version = str(current.version)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    return rmse(y_test.to_numpy(), model.predict(x_test)), version


def register_and_promote(
    client: MlflowClient,
    name: str,
    model_uri: str,
    decision: Decision,
    tags: dict[str, str],
) -> str:
    """Create the version with its decision recorded, point `staging` (and maybe `production`) at it.

    If any step after creation fails, the version is deleted again so no half-registered version
    stays behind; the error is re-raised.
    """
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version_tags = {
        **tags,
        "promotion.decision": "promoted" if decision.promote else "not_promoted",
        "promotion.reason": decision.reason,
        "promotion.candidate_test_rmse": f"{decision.candidate_rmse:.6f}",
        "promotion.production_test_rmse": (
            "" if decision.production_rmse is None else f"{decision.production_rmse:.6f}"
        ),
        "promotion.compared_with_version": decision.production_version or "",
    }
    mv = mlflow.register_model(model_uri, name, tags=version_tags)
    try:
        outcome = "Promoted to production" if decision.promote else "Kept in staging"
        client.update_model_version(name, mv.version, description=f"{outcome}: {decision.reason}.")
        client.set_registered_model_alias(name, STAGING, mv.version)
        if decision.promote:
            client.set_registered_model_alias(name, PRODUCTION, mv.version)
    except Exception:
        log.error("registration of %s v%s failed; deleting the version", name, mv.version)
        try:
            client.delete_model_version(name, mv.version)
        except Exception:  # the server may be gone; say so, keep the original error
            log.error("could not delete %s v%s; delete it by hand", name, mv.version)
        raise
    return str(mv.version)
