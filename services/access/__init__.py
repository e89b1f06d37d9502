"""Team access on the tracking server: service accounts, participants, their permissions.

MLflow's basic-auth app (`mlflow server --app-name basic-auth`) keeps users and grants in its own
database; this module provisions them through its REST API as the admin, idempotently (check, then
create; re-running changes nothing). Standard library only: `make participant` runs it with the
host's python3 before any venv exists, like infra/stack.py, and the `create-accounts` job runs it in
the mlflow image.

The permission model (checked in mlflow/server/auth of MLflow 3.17): grants are per experiment
(by id) and per registered model (by name), or `*` for every one; levels READ < USE < EDIT < MANAGE;
the server's default for a resource without a grant is NO_PERMISSIONS here (services/mlflow/start.sh),
so every account holds exactly the grants below. What a grant allows on a registered model:
READ reads versions, aliases and tags; EDIT also creates versions, sets tags and SETS ANY ALIAS
(SetRegisteredModelAlias needs `can_update`); MANAGE also deletes aliases, versions and the model
and grants to others. An alias cannot be reserved by a permission, so `production` is reserved by
holding EDIT on the platform's registered models only in the accounts of the promotion path (the
trainer's gate and the orchestrator) and the serving account (see SERVING below); participants read.
Without workspaces, MLflow lets every authenticated user create new experiments and registered
models (it becomes their MANAGE); that cannot be switched off per user, and touches nothing of
anyone else's.

The package is in three modules: accounts.py (who may do what, and the reserved names), api.py
(the REST clients) and provision.py (what a run creates and grants); `python -m services.access`
(__main__.py) is the job and the `make participant` command. This file only re-exports.
"""

from contracts.accounts import METRICS_SCRAPER
from services.access.accounts import (
    ALL_EXPERIMENTS_READ,
    EDIT,
    EXPERIMENT,
    MANAGE,
    MODEL_NAMES,
    NAME,
    READ,
    REGISTERED_MODEL,
    RESERVED_NAMES,
    SERVICE_ACCOUNTS,
    AccessError,
    Grant,
    ServiceAccount,
    participant_grants,
)
from services.access.api import AuthApi, JsonApi
from services.access.provision import (
    Participant,
    Report,
    add_participant,
    apply_grants,
    check_claim,
    check_name,
    ensure_platform,
    read_roster,
    remove_participant,
    write_credentials,
)

__all__ = [
    "ALL_EXPERIMENTS_READ",
    "EDIT",
    "EXPERIMENT",
    "MANAGE",
    "METRICS_SCRAPER",
    "MODEL_NAMES",
    "NAME",
    "READ",
    "REGISTERED_MODEL",
    "RESERVED_NAMES",
    "SERVICE_ACCOUNTS",
    "AccessError",
    "AuthApi",
    "Grant",
    "JsonApi",
    "Participant",
    "Report",
    "ServiceAccount",
    "add_participant",
    "apply_grants",
    "check_claim",
    "check_name",
    "ensure_platform",
    "participant_grants",
    "read_roster",
    "remove_participant",
    "write_credentials",
]
