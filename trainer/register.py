"""Model registry: register the best candidate, move `staging`, and `production` when the gate
(trainer/gate.py) says so; the decision is recorded on the version."""

from __future__ import annotations

import logging

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts import synthetic
from contracts.models import PRODUCTION, STAGING
from contracts.registry import is_absent
from trainer.gate import REFERENCE, Decision

log = logging.getLogger(__name__)

# The gate's reference baseline (trainer/gate.py), a registered-model tag written once, when the model
# first has a production version the gate saw, and never moved by later promotions. Only the accounts
# of the promotion path may write it (EDIT on the platform's registered models: services/access).
BASELINE_TAG = "gate.reference_baseline_rmse"
BASELINE_VERSION_TAG = "gate.reference_baseline_version"
BASELINE_SET_TAG = "gate.reference_set"
REFERENCE_SET = f"synthetic seed={synthetic.REFERENCE_SEED} rows={synthetic.REFERENCE_ROWS}"

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
    candidate_reference = found.tags.get(f"promotion.candidate_{REFERENCE}_rmse")
    if candidate_reference and reference_baseline(client, name) is None:
        _set_baseline(client, name, float(candidate_reference), version)  # the first production version
    client.set_model_version_tag(name, version, "promotion.decision", "promoted")
    client.set_model_version_tag(name, version, "promotion.approved_by", approver)
    description = (found.description or "").replace(
        OUTCOME_TEXT["awaiting_approval"], "Promoted after approval"
    )
    client.update_model_version(name, version, description=f"{description} Approved by {approver}.")


def reference_baseline(client: MlflowClient, name: str) -> float | None:
    """The model's recorded reference baseline, or None (no model, or none recorded yet)."""
    try:
        value = client.get_registered_model(name).tags.get(BASELINE_TAG)
    except MlflowException as exc:
        if is_absent(exc):
            return None
        raise
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(
            f"{name}: the tag {BASELINE_TAG}={value!r} is not a number; fix or delete it"
        ) from None


def record_reference_baseline(client: MlflowClient, name: str, decision: Decision, version: str) -> bool:
    """Record the decision's reference baseline on the registered model when it has none: the
    champion's (a model from before the baseline existed) or the new version's when it is the first
    production version. True when recorded; an existing baseline is never moved."""
    if decision.reference_baseline is None or reference_baseline(client, name) is not None:
        return False
    if decision.champion is not None:
        source = decision.champion_version or ""
    elif decision.moves_production:
        source = version
    else:
        return False  # the first version awaits approval: `promote_approved` records it
    _set_baseline(client, name, decision.reference_baseline, source)
    return True


def _set_baseline(client: MlflowClient, name: str, rmse: float, version: str) -> None:
    client.set_registered_model_tag(name, BASELINE_TAG, f"{rmse:.6f}")
    client.set_registered_model_tag(name, BASELINE_VERSION_TAG, version)
    client.set_registered_model_tag(name, BASELINE_SET_TAG, REFERENCE_SET)
    log.info("%s: reference baseline %.4f (v%s, %s) recorded", name, rmse, version, REFERENCE_SET)
