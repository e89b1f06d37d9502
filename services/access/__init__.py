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
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contracts.experiments import RETRAINING_EXPERIMENT, TRAINING_EXPERIMENT_TAGS
from contracts.models import MODELS

MODEL_NAMES = tuple(model.name for model in MODELS)
# The account Prometheus scrapes MLflow's /metrics with (prometheus/prometheus.yml): the only
# non-admin the tracking server lets through there (services/mlflow/app.py).
METRICS_SCRAPER = "prometheus"
# A participant name: an MLflow user name and experiment name, and a file name under .participants/.
NAME = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")
# MLflow refuses shorter passwords; .env values shorter than this are refused at start.
MIN_PASSWORD = 12

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


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def weak_password_problem(name: str, value: str | None) -> str | None:
    """Why `value` may not be used as the secret `name`, or None."""
    placeholders = {"admin", "password", "changeme", "mlflow", "secret", "admin1234567", "password1234"}
    if not value:
        return f"{name} is not set: run `make env` (it adds missing secrets to .env)"
    if len(value) < MIN_PASSWORD or value.lower() in placeholders or "change" in value.lower():
        return (
            f"{name} is weak (under {MIN_PASSWORD} characters or a placeholder): "
            "delete the line and run `make env`"
        )
    return None


class JsonApi:
    """A JSON HTTP API as one user with basic auth (an admin, for provisioning): MLflow's, Grafana's."""

    def __init__(
        self, url: str, username: str, password: str, what: str, password_setting: str, timeout: float = 30
    ) -> None:
        self.base = url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self.username = username
        self.what, self.password_setting, self.timeout = what, password_setting, timeout

    def call(self, method: str, path: str, body: Mapping[str, object] | None = None) -> tuple[int, dict]:
        """(status, JSON answer) of one request (a GET's body goes in the query string); raises
        AccessError when the server cannot be reached or refuses the login."""
        url = self.base + path
        data = None
        if method == "GET" and body:
            url += "?" + urllib.parse.urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers=self._headers)
        try:
            # The URL is the configured server (from .env or the compose file), never user input.
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # nosec B310
                status, text = answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            raise AccessError(f"{self.what} at {self.base} is unreachable: {exc}") from exc
        if status == 401:
            raise AccessError(f"{self.base} refused the admin login (401): check {self.password_setting}")
        try:
            parsed = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            parsed = {"message": text.strip()[:200]}
        return status, parsed if isinstance(parsed, dict) else {}

    def expect(self, method: str, path: str, body: Mapping[str, object] | None = None) -> dict:
        status, answer = self.call(method, path, body)
        if status != 200:
            raise AccessError(
                f"{self.what}: {method} {path} answered {status}: {answer.get('message', answer)}"
            )
        return answer


class AuthApi(JsonApi):
    """The tracking server's REST API as one user (the admin, for provisioning)."""

    def __init__(self, tracking_uri: str, username: str, password: str, timeout: float = 30) -> None:
        super().__init__(
            tracking_uri, username, password, "the tracking server", "MLFLOW_AUTH_ADMIN_PASSWORD", timeout
        )

    # --- users -----------------------------------------------------------------------------
    def user_exists(self, username: str) -> bool:
        status, answer = self.call("GET", "/api/2.0/mlflow/users/get", {"username": username})
        if status == 404:
            return False
        if status != 200:
            raise AccessError(f"looking up user {username!r} answered {status}: {answer.get('message')}")
        return True

    def is_admin(self, username: str) -> bool:
        answer = self.expect("GET", "/api/2.0/mlflow/users/get", {"username": username})
        return bool(answer["user"]["is_admin"])

    def usernames(self) -> list[str]:
        return [str(user["username"]) for user in self.expect("GET", "/api/2.0/mlflow/users/list")["users"]]

    def create_user(self, username: str, password: str) -> None:
        self.expect("POST", "/api/2.0/mlflow/users/create", {"username": username, "password": password})

    def set_password(self, username: str, password: str) -> None:
        self.expect(
            "PATCH", "/api/2.0/mlflow/users/update-password", {"username": username, "password": password}
        )

    def set_admin(self, username: str, admin: bool) -> None:
        self.expect("PATCH", "/api/2.0/mlflow/users/update-admin", {"username": username, "is_admin": admin})

    def delete_user(self, username: str) -> bool:
        """Delete the user and its grants; False when there was none."""
        if not self.user_exists(username):
            return False
        self.expect("DELETE", "/api/2.0/mlflow/users/delete", {"username": username})
        return True

    def grants(self, username: str) -> dict[tuple[str, str], str]:
        """(resource type, id or *) -> permission, as granted to the user itself."""
        answer = self.expect("GET", "/api/3.0/mlflow/users/permissions/list", {"username": username})
        own = "__user_"  # the user's own grants, not those of roles it holds
        return {
            (row["resource_type"], row["resource_pattern"]): row["permission"]
            for row in answer.get("permissions", [])
            if str(row.get("role_name", "")).startswith(own)
        }

    def grant(self, username: str, resource_type: str, resource_id: str, permission: str) -> bool:
        """Make the user's grant on the resource exactly `permission`; True when it changed."""
        current = self.grants(username).get((resource_type, resource_id))
        if current == permission:
            return False
        target = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
        if current is not None:
            self.expect("POST", "/api/3.0/mlflow/users/permissions/revoke", target)
        self.expect("POST", "/api/3.0/mlflow/users/permissions/grant", {**target, "permission": permission})
        return True

    # --- resources -------------------------------------------------------------------------
    def experiment_id(self, name: str, create: bool = True) -> str | None:
        """The experiment's id; created when missing (and `create`), tagged as a model-training
        experiment either way (contracts/experiments.py: how the MLflow UI shows it)."""
        status, answer = self.call(
            "GET", "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": name}
        )
        if status == 200:
            experiment = answer["experiment"]
            if create:
                self.tag_model_training(experiment)
            return str(experiment["experiment_id"])
        if not create:
            return None
        tags = [{"key": key, "value": value} for key, value in TRAINING_EXPERIMENT_TAGS.items()]
        created = self.expect("POST", "/api/2.0/mlflow/experiments/create", {"name": name, "tags": tags})
        return str(created["experiment_id"])

    def tag_model_training(self, experiment: Mapping[str, object]) -> None:
        """Set the model-training kind on an existing experiment that lacks it."""
        raw = experiment.get("tags")
        have = {t["key"]: t["value"] for t in raw} if isinstance(raw, list) else {}
        for key, value in TRAINING_EXPERIMENT_TAGS.items():
            if have.get(key) != value:
                body = {"experiment_id": experiment["experiment_id"], "key": key, "value": value}
                self.expect("POST", "/api/2.0/mlflow/experiments/set-experiment-tag", body)

    def ensure_registered_model(self, name: str) -> bool:
        status, _ = self.call("GET", "/api/2.0/mlflow/registered-models/get", {"name": name})
        if status == 200:
            return False
        self.expect("POST", "/api/2.0/mlflow/registered-models/create", {"name": name})
        return True

    def resource_id(self, grant: Grant) -> str:
        if grant.resource == "*" or grant.resource_type == REGISTERED_MODEL:
            return grant.resource
        found = self.experiment_id(grant.resource)
        assert found is not None  # noqa: S101  (create=True never returns None)
        return found


@dataclass
class Report:
    """What a provisioning run did, one line each."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)


def apply_grants(api: AuthApi, username: str, grants: Iterable[Grant], report: Report) -> None:
    for grant in grants:
        if api.grant(username, grant.resource_type, api.resource_id(grant), grant.permission):
            report.add(f"{username}: {grant.permission} on {grant.resource_type} {grant.resource}")


def ensure_platform(
    api: AuthApi, passwords: Mapping[str, str], trainer_experiments: Iterable[str] = ()
) -> Report:
    """The platform's registered models and experiments, and every service account with exactly its
    grants and the password from .env (a changed .env password is applied)."""
    report = Report()
    for name in MODEL_NAMES:
        if api.ensure_registered_model(name):
            report.add(f"registered model {name} created")
    api.experiment_id(RETRAINING_EXPERIMENT)
    for account in SERVICE_ACCOUNTS:
        password = passwords.get(account.password_env, "")
        problem = weak_password_problem(account.password_env, password)
        if problem:
            raise AccessError(problem)
        if api.user_exists(account.name):
            api.set_password(account.name, password)
        else:
            api.create_user(account.name, password)
            report.add(f"service account {account.name} created ({account.why})")
        if api.is_admin(account.name) != account.admin:  # an older platform's admin scraper
            api.set_admin(account.name, account.admin)
            report.add(f"service account {account.name}: {'made' if account.admin else 'no longer'} an admin")
        grants = list(account.grants)
        if account.name == "trainer":
            # The experiment `make up`'s first training logs into (PARTICIPANT in .env) may exist
            # from before authentication: the trainer writes there (EDIT), created if missing.
            grants += [Grant(EXPERIMENT, name, EDIT) for name in trainer_experiments if name]
        apply_grants(api, account.name, grants, report)
    return report


@dataclass
class Participant:
    name: str
    created: bool
    password: str | None = None  # only when created now (shown once)
    credentials: Path | None = None


def check_name(name: str, platform: Iterable[str] = ()) -> str:
    """`name` when a participant may take it; else AccessError saying why. `platform`: the operator's
    experiments (PARTICIPANT, ACCESS_TRAINER_EXPERIMENTS: the trainer account writes there)."""
    if not NAME.match(name):
        raise AccessError(
            f"participant name {name!r}: use 2-32 characters, lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter"
        )
    why = RESERVED_NAMES.get(name)
    if why is None and name in {p.strip().lower() for p in platform}:
        why = "the operator's experiment (PARTICIPANT or ACCESS_TRAINER_EXPERIMENTS in .env)"
    if why:
        raise AccessError(f"participant name {name!r} is reserved: {why}; choose another name")
    return name


def check_claim(api: AuthApi, name: str) -> None:
    """AccessError when the experiment `name` exists and belongs to someone else: the participant does
    not MANAGE it and another user holds a grant on it (its creator, a service account). An experiment
    nobody holds (a removed participant's: deleting a user deletes its grants) may be claimed again."""
    experiment_id = api.experiment_id(name, create=False)
    if experiment_id is None:
        return
    resource = (EXPERIMENT, experiment_id)
    if api.user_exists(name) and api.grants(name).get(resource) == MANAGE:
        return  # their own: re-adding changes nothing
    holders = sorted(
        user for user in api.usernames() if user not in (name, api.username) and resource in api.grants(user)
    )
    if holders:
        raise AccessError(
            f"participant name {name!r}: the experiment {name!r} (id {experiment_id}) already exists and "
            f"belongs to {', '.join(holders)}; choose another name"
        )


def write_credentials(directory: Path, name: str, password: str, tracking_uri: str) -> Path:
    """`<directory>/<name>.env`, readable by its owner only (0600, directory 0700)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / f"{name}.env"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(
            f"# MLflow login of participant {name}: keep private. `make train NAME={name}` uses it;\n"
            f"# in a shell: set -a; . {path.name}; set +a\n"
            f"MLFLOW_TRACKING_URI={tracking_uri}\nMLFLOW_TRACKING_USERNAME={name}\n"
            f"MLFLOW_TRACKING_PASSWORD={password}\nPARTICIPANT={name}\n"
        )
    return path


def add_participant(
    api: AuthApi,
    name: str,
    credentials_dir: Path,
    public_uri: str,
    report: Report,
    platform: Iterable[str] = (),
) -> Participant:
    """Create the participant (never touching an existing one's password) and its experiment and
    grants; returns the new password once, stored 0600 under `credentials_dir`. Refused (AccessError)
    for a platform name (`check_name`, `platform`: the operator's experiments) and for an existing
    experiment of someone else's (`check_claim`)."""
    check_name(name, platform)
    check_claim(api, name)
    participant = Participant(name, created=not api.user_exists(name))
    if participant.created:
        participant.password = generate_password()
        api.create_user(name, participant.password)
        participant.credentials = write_credentials(credentials_dir, name, participant.password, public_uri)
        report.add(f"participant {name} created")
    apply_grants(api, name, participant_grants(name), report)
    return participant


def remove_participant(api: AuthApi, name: str, credentials_dir: Path) -> bool:
    """Delete the user (its logins fail with 401 at once) and its credentials file; its experiment
    and runs stay (an admin can delete them in the UI)."""
    check_name(name)
    removed = api.delete_user(name)
    (credentials_dir / f"{name}.env").unlink(missing_ok=True)
    return removed


def read_roster(path: Path, platform: Iterable[str] = ()) -> list[str]:
    """Participant names, one a line; blank lines and `#` comments ignored; every name checked
    (`check_name`) before any is added."""
    names = []
    platform = tuple(platform)
    for line in path.read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            try:
                names.append(check_name(name, platform))
            except AccessError as exc:
                raise AccessError(f"{path}: {exc}") from None
    return names
