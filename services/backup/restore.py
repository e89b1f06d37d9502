"""`restore`: an archive into a target that holds no data (or, forced, over one), then checked
against the manifest; a restore that fails half-way says so (`RestoreIncomplete`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from services.backup import Settings, objects
from services.backup import databases as db
from services.backup.archive import (
    BackupError,
    HashingReader,
    check_member,
    members,
    verify,
)
from services.backup.report import one_line, size_text
from services.common.s3 import ensure_bucket


def target_problems(settings: Settings, server: db.Server, s3: Any, manifest: dict[str, Any]) -> list[str]:
    """What the restore would overwrite: user data in the archived databases, objects in the bucket."""
    found = []
    for name in manifest["dump_order"]:
        if name != settings.mlflow.auth_database and (
            data := db.user_data(server, name, settings.mlflow.database)
        ):
            found.append(data)
    if not objects.bucket_is_empty(s3, settings.s3.bucket):
        found.append(f"objects in bucket {settings.s3.bucket}")
    return found


class RestoreIncomplete(BackupError):
    """A restore failed after it changed the target (the CLI exits 2: re-run it with --force)."""


def restore_archive(settings: Settings, path: Path, force: bool, check_only: bool = False) -> str:
    """Check the archive, refuse a target with data unless `force`, upload the objects, restore each
    database as a whole (restored aside, then swapped in; MLflow's last), then compare counts with
    the manifest. `check_only`: stop after the checks (make restore runs them before it stops the
    writers)."""
    manifest = verify(path)  # before anything is touched
    server = db.Server.from_uri(settings.postgres.admin_uri)
    s3 = objects.client(settings.s3.endpoint_url)
    archived = db.major(manifest["tools"]["pg_dump"])
    if db.major(db.tool_version("pg_restore")) < archived:
        raise BackupError(f"{db.tool_version('pg_restore')} cannot read dumps of pg_dump {archived}")
    found = target_problems(settings, server, s3, manifest)
    if found and not force:
        raise BackupError(
            f"the target is not empty ({'; '.join(found)}); a restore replaces it: "
            "add --force (make restore FORCE=1) to overwrite"
        )
    if check_only:
        state = "holds data that --force overwrites" if found else "is empty"
        return f"restore: {path} is intact ({len(manifest['members'])} members) and the target {state}"
    try:
        return restore_members(settings, server, s3, manifest, path)
    except Exception as exc:
        raise RestoreIncomplete(
            f"{one_line(exc)} (the target is partly restored: fix this, then restore with --force)"
        ) from None


def restore_members(
    settings: Settings, server: db.Server, s3: Any, manifest: dict[str, Any], path: Path
) -> str:
    ensure_bucket(s3, settings.s3.bucket)
    member_database = {info["member"]: name for name, info in manifest["databases"].items()}
    scratch = Path(tempfile.mkdtemp(dir=path.parent, prefix=".restore-"))
    try:
        dumps: dict[str, Path] = {}
        for info, handle in members(path):  # objects uploaded on the way, dumps set aside
            if info.name in member_database:
                dumps[member_database[info.name]] = target = scratch / f"{len(dumps)}.dump"
                reader = HashingReader(handle)
                with target.open("wb") as out:
                    shutil.copyfileobj(reader, out)
            else:
                key = manifest["members"].get(info.name, {}).get("key")
                if key is None:
                    raise BackupError(f"{path}: member {info.name!r} is not in the manifest")
                reader = objects.restore(s3, settings.s3.bucket, key, handle)
            check_member(path, manifest, info.name, reader)
        for name in manifest["dump_order"]:
            db.restore(server, name, dumps[name])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return check_restored(settings, server, s3, manifest, path)


def check_restored(
    settings: Settings, server: db.Server, s3: Any, manifest: dict[str, Any], path: Path
) -> str:
    """Compare the restored platform with the manifest; the one line `make restore` prints."""
    rows = tables = 0
    for name, info in manifest["databases"].items():
        now = db.counts(server, name)
        for table, expected in info["tables"].items():
            if now.get(table) != expected:
                raise BackupError(
                    f"after the restore {name}.{table} has {now.get(table)} rows, the archive {expected}"
                )
            rows, tables = rows + expected, tables + 1
    present = objects.sizes(s3, settings.s3.bucket)
    archived = {m["key"]: m["size"] for m in manifest["members"].values() if "key" in m}
    wrong = [key for key, size in archived.items() if present.get(key) != size]
    if wrong:
        raise BackupError(
            f"after the restore {len(wrong)} object(s) are missing or differ, e.g. {wrong[0]!r}"
        )
    extra = len(set(present) - set(archived))
    stored = manifest["objects"]
    return (
        f"restore: {path} -> {len(manifest['databases'])} databases ({rows:,} rows in {tables} tables) "
        f"and {stored['count']:,} objects ({size_text(stored['bytes'])}) in bucket {settings.s3.bucket}, "
        "counts verified" + (f"; {extra} object(s) not in the archive left in place" if extra else "")
    )
