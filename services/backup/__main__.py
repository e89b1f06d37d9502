"""`python -m services.backup backup | restore ARCHIVE [--force] | verify ARCHIVE | upgrade`.

Settings come from the environment (the `backup` service in docker-compose.yml): POSTGRES_ADMIN_URI,
S3_ENDPOINT_URL, S3_BUCKET, AWS credentials, BACKUP_DIR. Every failure is one line: exit 1 when
nothing was changed, 2 when a restore failed part-way (re-run it with --force).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from contracts.settings import SettingsError
from services.backup import Settings
from services.backup.archive import verify
from services.backup.create import run_backup
from services.backup.report import one_line
from services.backup.restore import RestoreIncomplete, restore_archive
from services.backup.upgrade import upgrade_schemas


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.backup", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("backup", help="write backups/mlops-<UTC time>.tar (safe while the platform runs)")
    restore = sub.add_parser("restore", help="restore an archive into an empty platform")
    restore.add_argument("archive", type=Path)
    restore.add_argument("--force", action="store_true", help="overwrite a platform that holds data")
    restore.add_argument("--check", action="store_true", help="only verify the archive and the target")
    verify = sub.add_parser("verify", help="check an archive's checksums (touches nothing)")
    verify.add_argument("archive", type=Path)
    sub.add_parser(
        "upgrade", help="migrate MLflow's schemas and the prediction log's (after a backup, writers stopped)"
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> str:
    if args.command == "verify":
        manifest = verify(args.archive)
        return (
            f"verify: {args.archive} is intact: {len(manifest['members'])} members, checksums match "
            f"(made {manifest['created']}, MLflow schema {manifest['mlflow_schema_revision']})"
        )
    settings = Settings()  # type: ignore[call-arg]
    if args.command == "backup":
        return run_backup(settings)
    if args.command == "restore":
        return restore_archive(settings, args.archive, args.force, args.check)
    return upgrade_schemas(settings)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.umask(0o077)  # archives hold password hashes: readable by their owner only
    try:
        print(run(args), flush=True)
    except RestoreIncomplete as exc:
        return fail(args.command, str(exc), code=2)
    except SettingsError as exc:
        return fail(args.command, str(exc))
    except KeyboardInterrupt:
        return fail(args.command, "interrupted (a partial archive is removed)")
    except Exception as exc:  # noqa: BLE001  (one line, never a stack trace)
        return fail(args.command, one_line(exc))
    return 0


def fail(command: str, message: str, code: int = 1) -> int:
    print(f"{command}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
