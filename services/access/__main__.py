"""`python -m services.access`: provision team access on the tracking server (idempotent).

    python -m services.access platform                 # accounts + resources (create-accounts job)
    python -m services.access roster participants.txt  # every participant of the roster (adds, never changes)
    python -m services.access add alice              # one participant; prints the password once
    python -m services.access remove alice           # revoke: delete the user
    python -m services.access grafana-viewer         # Grafana's read-only login (create-grafana-viewer job)

Settings from the environment, or from an env file (`--env-file .env`, as `make participant` does):
MLFLOW_TRACKING_URI (else http://localhost:$MLFLOW_PORT), MLFLOW_AUTH_ADMIN_USERNAME (admin),
MLFLOW_AUTH_ADMIN_PASSWORD, the service accounts' MLFLOW_<ACCOUNT>_PASSWORD, ACCESS_TRAINER_EXPERIMENTS
(else PARTICIPANT), ACCESS_CREDENTIALS_DIR (.participants). grafana-viewer: GRAFANA_URL (else
http://localhost:$GRAFANA_PORT), GRAFANA_ADMIN_USER/PASSWORD, GRAFANA_VIEWER_USER (viewer) and
GRAFANA_VIEWER_PASSWORD. No secret is ever taken from argv.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from contracts.envfile import read_env_file
from services.access import (
    AccessError,
    AuthApi,
    Report,
    add_participant,
    check_name,
    ensure_platform,
    read_roster,
    remove_participant,
)
from services.access.grafana import GrafanaApi, ensure_viewer
from services.common.passwords import weak_password_problem


def _settings(env_file: str | None) -> dict[str, str]:
    values = read_env_file(Path(env_file)) if env_file else {}
    return {**values, **os.environ}


def _wait_until_up(api: AuthApi, attempts: int) -> None:
    """The server may still be starting (a compose job starts right after it reports healthy).
    A loop, not tenacity: this package runs with the host's python3 (standard library only)."""
    for attempt in range(attempts):
        try:
            api.user_exists("admin")
            return
        except AccessError:
            if attempt == attempts - 1:
                raise
            time.sleep(2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.access",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--env-file", help="read settings from this file (e.g. .env); the environment still wins"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("platform", help="service accounts and platform resources")
    roster = sub.add_parser("roster", help="add every participant of a roster file")
    roster.add_argument("file")
    add = sub.add_parser("add", help="add a participant")
    add.add_argument("name")
    remove = sub.add_parser("remove", help="remove a participant")
    remove.add_argument("name")
    sub.add_parser("grafana-viewer", help="Grafana's read-only login for participants")
    return parser


@dataclass(frozen=True)
class _Target:
    """Where a tracking-server command provisions, read from the settings."""

    uri: str
    public: str  # the URL written into a participant's credentials file
    admin: str
    credentials: Path
    # The operator's experiments: the trainer account writes there, so no participant may take them.
    experiments: list[str]

    @classmethod
    def of(cls, settings: dict[str, str]) -> _Target:
        port = settings.get("MLFLOW_PORT", "5000")
        uri = settings.get("MLFLOW_TRACKING_URI") or f"http://localhost:{port}"
        trainer_experiments = settings.get("ACCESS_TRAINER_EXPERIMENTS") or settings.get("PARTICIPANT", "")
        return cls(
            uri=uri,
            public=settings.get("MLFLOW_PUBLIC_URL") or uri,
            admin=settings.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin",
            credentials=Path(settings.get("ACCESS_CREDENTIALS_DIR") or ".participants"),
            experiments=[name.strip() for name in trainer_experiments.split(",")],
        )


def _roster(api: AuthApi, target: _Target, file: str, report: Report) -> None:
    path = Path(file)
    names = read_roster(path, target.experiments) if path.exists() else []
    for name in names:
        new = add_participant(api, name, target.credentials, target.public, report, target.experiments)
        if new.created:
            print(f"participant {name}: created; login in {new.credentials} (0600)")
    report.add(f"roster {path}: {len(names)} participant(s)")


def _add(api: AuthApi, target: _Target, name: str, report: Report) -> None:
    new = add_participant(api, name, target.credentials, target.public, report, target.experiments)
    if new.created:
        print(f"participant {new.name} created. Password (shown once, also in {new.credentials}, 0600):")
        print(f"  MLFLOW_TRACKING_USERNAME={new.name}\n  MLFLOW_TRACKING_PASSWORD={new.password}")
    else:
        print(
            f"participant {new.name} exists; password unchanged (it was shown when created; "
            f"`make participant-remove NAME={new.name}` then add again issues a new one)"
        )


def _tracking_command(args: argparse.Namespace, settings: dict[str, str]) -> Report:
    """Run one tracking-server command (platform, roster, add, remove); AccessError on refusal."""
    target = _Target.of(settings)
    if args.command == "add":  # a platform name is refused before the server is asked anything
        check_name(args.name, target.experiments)
    problem = weak_password_problem("MLFLOW_AUTH_ADMIN_PASSWORD", settings.get("MLFLOW_AUTH_ADMIN_PASSWORD"))
    if problem:
        raise AccessError(problem)
    api = AuthApi(target.uri, target.admin, settings["MLFLOW_AUTH_ADMIN_PASSWORD"])
    _wait_until_up(api, int(settings.get("ACCESS_ATTEMPTS", "30")))
    report = Report()
    if args.command == "platform":
        report = ensure_platform(api, settings, target.experiments)
    elif args.command == "roster":
        _roster(api, target, args.file, report)
    elif args.command == "add":
        _add(api, target, args.name, report)
    elif args.command == "remove":
        removed = remove_participant(api, args.name, target.credentials)
        print(f"participant {args.name} {'removed: its logins now get 401' if removed else 'did not exist'}")
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings(args.env_file)
    if args.command == "grafana-viewer":
        return _grafana_viewer(settings)
    try:
        report = _tracking_command(args, settings)
    except AccessError as exc:
        print(f"access: error: {exc}", file=sys.stderr)
        return 1
    for line in report.lines:
        print(f"access: {line}")
    return 0


def _grafana_viewer(settings: dict[str, str]) -> int:
    url = settings.get("GRAFANA_URL") or f"http://localhost:{settings.get('GRAFANA_PORT', '3000')}"
    login = settings.get("GRAFANA_VIEWER_USER") or "viewer"
    try:
        for name in ("GRAFANA_ADMIN_PASSWORD", "GRAFANA_VIEWER_PASSWORD"):
            if problem := weak_password_problem(name, settings.get(name)):
                raise AccessError(problem)
        admin = settings.get("GRAFANA_ADMIN_USER") or "admin"
        api = GrafanaApi(url, admin, settings["GRAFANA_ADMIN_PASSWORD"])
        api.wait_until_up(int(settings.get("ACCESS_ATTEMPTS", "30")))
        print(f"access: {ensure_viewer(api, login, settings['GRAFANA_VIEWER_PASSWORD'])}")
    except AccessError as exc:
        print(f"access: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
