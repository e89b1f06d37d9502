"""Who may do what on the tracking server: the service accounts, a participant's grants, and the
names no participant may take (the permission model is in this package's docstring).

Standard library only (see services/access/__init__.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from contracts.accounts import METRICS_SCRAPER
from contracts.experiments import RETRAINING_EXPERIMENT
from contracts.models import MODELS

MODEL_NAMES = tuple(model.name for model in MODELS)
# A participant name: an MLflow user name and experiment name, and a file name under .participants/.
NAME = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")

READ, EDIT, MANAGE = "READ", "EDIT", "MANAGE"
EXPERIMENT, REGISTERED_MODEL = "experiment", "registered_model"


class AccessError(RuntimeError):
    """A provisioning step the server refused; the message is one readable line."""


@dataclass(frozen=True)
class Grant:
    resource_type: str  # EXPERIMENT or REGISTERED_MODEL
    resource: str  # experiment *name* or registered model name, or "*"
    permission: str


@dataclass(frozen=True)
class ServiceAccount:
    name: str
    password_env: str  # the .env variable holding its password
    grants: tuple[Grant, ...]
    admin: bool = False  # only where MLflow allows nothing less (none today); set both ways
    why: str = ""


def _on_models(permission: str) -> tuple[Grant, ...]:
    return tuple(Grant(REGISTERED_MODEL, name, permission) for name in MODEL_NAMES)


ALL_EXPERIMENTS_READ = Grant(EXPERIMENT, "*", READ)

# Each grant with its reason. Experiments named here are created by `ensure_platform` first.
SERVICE_ACCOUNTS = (
    ServiceAccount(
        "trainer",
        "MLFLOW_TRAINER_PASSWORD",
        (
            # Reads the production version's run and model to judge a candidate against it (gate).
            ALL_EXPERIMENTS_READ,
            # Registers versions, sets `staging`, and `production` when its gate promotes (EDIT: no
            # deleting versions, aliases or the model). Its own experiments: MANAGE as their creator.
            *_on_models(EDIT),
        ),
        why="first training at start-up and `make train` without a participant",
    ),
    ServiceAccount(
        "serving",
        "MLFLOW_SERVING_PASSWORD",
        (
            # Downloads the served version's model files (artifacts of the run that logged them).
            ALL_EXPERIMENTS_READ,
            # Reads its alias and the version it names; writes nothing (what it serves, it says in
            # the `X-Model-Version` header of every answer: contracts.models.served_version).
            *_on_models(READ),
        ),
        why="the serving launchers",
    ),
    ServiceAccount(
        "gateway",
        "MLFLOW_GATEWAY_PASSWORD",
        (
            # Reads the served version's signature and reference profile (run artifacts).
            ALL_EXPERIMENTS_READ,
            # Reads the alias and the served version's model information.
            *_on_models(READ),
        ),
        why="the prediction gateway",
    ),
    ServiceAccount(
        "monitor",
        "MLFLOW_MONITOR_PASSWORD",
        (
            # Reads training-time metrics of the production versions' runs, and the served versions'
            # reference profiles (run artifacts) for drift.
            ALL_EXPERIMENTS_READ,
            # Reads which version is in production, and the run of the version being served.
            *_on_models(READ),
        ),
        why="the monitor",
    ),
    ServiceAccount(
        "reports",
        "MLFLOW_REPORTS_PASSWORD",
        (
            # Reads every participant's runs and the closed loop's retraining runs for the reports.
            ALL_EXPERIMENTS_READ,
            # Reads versions, their gate tags and aliases (the registry history).
            *_on_models(READ),
        ),
        why="the reports and the leaderboard",
    ),
    ServiceAccount(
        "orchestrator",
        "MLFLOW_ORCHESTRATOR_PASSWORD",
        (
            # Reads production versions' runs (gate scores, watch baselines).
            ALL_EXPERIMENTS_READ,
            # Records every retraining as a run there; its trainer containers log nested runs.
            Grant(EXPERIMENT, RETRAINING_EXPERIMENT, EDIT),
            # Its trainer containers register versions and promote through the gate; the watch
            # moves `production` back (rollback) and tags the version it rolled back.
            *_on_models(EDIT),
        ),
        why="the closed loop (retraining, gate, rollback)",
    ),
    ServiceAccount(
        METRICS_SCRAPER,
        "MLFLOW_PROMETHEUS_PASSWORD",
        # No grant: a plain user that reads no experiment or model. MLflow 3.17 lets only admins
        # through to /metrics (no validator for it, and MLFLOW_BASIC_AUTH_FAIL_CLOSED denies); the
        # platform's app registers one that admits exactly this account there
        # (services/mlflow/app.py, `allow_metrics_scraper`), so it is no admin.
        (),
        why="Prometheus scraping MLflow's /metrics",
    ),
)
# Names no participant may take, each with why: a participant's name is their login and the name of
# the experiment they MANAGE, so a platform name would give them the platform's experiment (where the
# retrained production models live: code that serving and the trainer run) or a service's identity.
# The operator's experiments (PARTICIPANT, ACCESS_TRAINER_EXPERIMENTS) are passed in as `platform`.
RESERVED_NAMES = {
    "admin": "the tracking server's admin login",
    "default": "MLflow's Default experiment",
    RETRAINING_EXPERIMENT: "the experiment of the orchestrator's retrained production models",
    **{name: "a registered model of the platform" for name in MODEL_NAMES},
    **{account.name: f"a service account ({account.why})" for account in SERVICE_ACCOUNTS},
}


def participant_grants(name: str) -> tuple[Grant, ...]:
    return (
        # Their own experiment: runs, tags, deleting runs, sharing it with others.
        Grant(EXPERIMENT, name, MANAGE),
        # Everyone's runs (compare with teammates), but no writing there.
        ALL_EXPERIMENTS_READ,
        # The registry: versions, aliases, model files; no registering and no alias moves.
        Grant(REGISTERED_MODEL, "*", READ),
    )
