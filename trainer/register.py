"""Model registry: register the best candidate, move `staging`, and `production` when the gate
(trainer/gate.py) says so; the decision is recorded on the version."""

from __future__ import annotations

import logging

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts.models import PRODUCTION, STAGING
from contracts.registry import is_absent
from trainer.gate import Decision

log = logging.getLogger(__name__)

OUTCOME_TEXT = {
    "promoted": "Promoted to production",
    "awaiting_approval": "Passed the gate; awaiting approval to promote",
    "not_promoted": "Kept in staging",
}


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model unless it exists (check first: a failed create is logged by
    Postgres as an error). Two sessions may race to create it: the loser's "already exists" is fine."""
    try:
        client.get_registered_model(name)
        return
    except MlflowException as exc:
        if not is_absent(exc):
            raise
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def logged_model_id(model_uri: str) -> str:
    """The id in a logged model's URI, `models:/<model_id>` (what `log_model` returns in MLflow 3)."""
    model_id = model_uri.removeprefix("models:/")
    if model_id == model_uri or not model_id or "/" in model_id:
        raise ValueError(f"not a logged model's URI: {model_uri}")
    return model_id


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
    ensure_registered_model(client, name)
    version_tags = {**tags, **decision.tags()}
    # Not mlflow.register_model: it tries to create the registered model every time, and each
    # "already exists" is a duplicate-key error in the Postgres log (docs/training.md).
    try:
        mv = client.create_model_version(
            name, model_uri, tags=version_tags, model_id=logged_model_id(model_uri)
        )
    except Exception:
        # The server may have created it and failed to answer (a restart, a database outage): the
        # client's retry then creates another. Neither may stay without its description and aliases.
        delete_unfinished(client, name, {tags.get("run_id", "")})
        raise
    try:
        client.update_model_version(
            name, mv.version, description=f"{OUTCOME_TEXT[decision.outcome]}: {decision.reason}."
        )
        client.set_registered_model_alias(name, STAGING, mv.version)
        if decision.moves_production:
            client.set_registered_model_alias(name, PRODUCTION, mv.version)
    except Exception:
        log.error("registration of %s v%s failed; deleting the version", name, mv.version)
        try:
            client.delete_model_version(name, mv.version)
        except Exception:  # the server may be gone; say so, keep the original error
            log.error("could not delete %s v%s; delete it by hand", name, mv.version)
        raise
    return str(mv.version)


def delete_unfinished(client: MlflowClient, name: str, run_ids: set[str]) -> list[str]:
    """Delete the versions of `name` registered from `run_ids` (their `run_id` tag) whose
    registration did not finish: no description, or no alias. Returns the deleted versions."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
        aliased = {str(v) for v in client.get_registered_model(name).aliases.values()}
    except MlflowException as exc:
        if is_absent(exc):
            return []
        raise
    deleted = []
    for mv in versions:  # (search results carry no aliases: the registered model's are used)
        if mv.tags.get("run_id") not in run_ids or (mv.description and str(mv.version) in aliased):
            continue
        log.warning("deleting %s v%s: its registration did not finish", name, mv.version)
        client.delete_model_version(name, mv.version)
        deleted.append(str(mv.version))
    return deleted


def promote_approved(client: MlflowClient, name: str, version: str, approver: str) -> None:
    """Move `production` to a version that passed the gate and awaited approval (the CI pipeline's
    promotion job); ValueError for any other version: the gate's refusal is never overridden here."""
    found = client.get_model_version(name, version)
    decision = found.tags.get("promotion.decision", "")
    if decision != "awaiting_approval":
        raise ValueError(
            f"{name} v{version} has promotion.decision={decision or '(none)'}, not awaiting_approval"
        )
    client.set_registered_model_alias(name, PRODUCTION, version)
    client.set_model_version_tag(name, version, "promotion.decision", "promoted")
    client.set_model_version_tag(name, version, "promotion.approved_by", approver)
    description = (found.description or "").replace(
        OUTCOME_TEXT["awaiting_approval"], "Promoted after approval"
    )
    client.update_model_version(name, version, description=f"{description} Approved by {approver}.")
