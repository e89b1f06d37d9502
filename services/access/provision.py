"""Provisioning, idempotently: the platform's models, experiments and service accounts
(`ensure_platform`), and participants (`add_participant`, `remove_participant`, `read_roster`).

Standard library only (see services/access/__init__.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contracts.experiments import RETRAINING_EXPERIMENT
from services.access.accounts import (
    EDIT,
    EXPERIMENT,
    MANAGE,
    MODEL_NAMES,
    NAME,
    RESERVED_NAMES,
    SERVICE_ACCOUNTS,
    AccessError,
    Grant,
    participant_grants,
)
from services.access.api import AuthApi
from services.common.passwords import generate_password, weak_password_problem


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
