"""Backups of the platform's data: every PostgreSQL database and the artifact bucket in one archive.

`backup` is safe while the platform runs; `restore` refuses a target that holds data unless forced;
`upgrade` migrates MLflow's schemas and the prediction log's (after a backup, with the writers
stopped: `make upgrade`).
Why the order of the copies makes a consistent archive: docs/operations.md.
"""

from __future__ import annotations

import os
import platform
import shutil
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg2
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field
from pydantic_settings import BaseSettings

from contracts.database import MONITORING_DATABASE, drop_grafana_views
from contracts.predlog_migrations import apply_schema
from contracts.settings import database_uri, sqlalchemy_uri
from services.backup import databases as db
from services.backup import objects
from services.backup.archive import (
    FORMAT,
    ArchiveWriter,
    BackupError,
    HashingReader,
    check_member,
    fsync_and_rename,
    members,
    verify,
)
from services.common.s3 import ensure_bucket


class Settings(BaseSettings):
    admin_uri: str = Field(alias="POSTGRES_ADMIN_URI")
    # Comma-separated; empty: every database of the cluster (new ones are backed up without a change).
    databases: str = Field("", alias="BACKUP_DATABASES")
    mlflow_database: str = Field("mlflow", alias="MLFLOW_DATABASE")
    # MLflow's users: every start creates the service accounts, so rows there do not make a target
    # "not empty"; a restore replaces them with the archived ones.
    auth_database: str = Field("mlflow_auth", alias="MLFLOW_AUTH_DATABASE")
    endpoint_url: str = Field(alias="S3_ENDPOINT_URL")
    bucket: str = Field("mlflow", alias="S3_BUCKET")
    directory: Path = Field(Path("backups"), alias="BACKUP_DIR")


def one_line(exc: BaseException) -> str:
    """An exception as the one line the CLI prints (never a stack trace)."""
    if isinstance(exc, BackupError):
        return str(exc)
    if isinstance(exc, psycopg2.Error):
        return f"PostgreSQL: {db.first_line(str(exc))}"
    if isinstance(exc, BotoCoreError | ClientError):
        return objects.describe(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {db.first_line(str(exc))}"


def dump_order(names: list[str], mlflow_database: str) -> list[str]:
    """The other databases first, MLflow's store last: they refer to its ids (model versions in the
    prediction log, experiments in permissions), and anything they refer to was created before their
    snapshot, so it is in the later snapshot of MLflow's store."""
    others = sorted(name for name in names if name != mlflow_database)
    return others + [name for name in names if name == mlflow_database]


def versions(server: db.Server) -> dict[str, str]:
    packages = {}
    for name in ("mlflow", "boto3", "psycopg2-binary"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "pg_dump": db.tool_version("pg_dump"),
        "postgres_server": db.server_version(server),
        "python": platform.python_version(),
        **packages,
    }


def create_backup(settings: Settings) -> tuple[Path, dict[str, Any]]:
    """Write `<dir>/mlops-<UTC time>.tar`: the databases (MLflow's last), then the objects, then the
    manifest. Written under a hidden `.partial` name and renamed when complete."""
    server = db.Server.from_uri(settings.admin_uri)
    s3 = objects.client(settings.endpoint_url)
    names = [n.strip() for n in settings.databases.split(",") if n.strip()] or db.list_databases(server)
    order = dump_order(names, settings.mlflow_database)
    tools = versions(server)
    if db.major(tools["pg_dump"]) < db.major(tools["postgres_server"]):
        raise BackupError(f"{tools['pg_dump']} cannot dump a PostgreSQL {tools['postgres_server']} server")
    settings.directory.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    final = settings.directory / f"mlops-{started:%Y%m%dT%H%M%SZ}.tar"
    partial = final.with_name(f".{final.name}.partial")
    if final.exists() or partial.exists():
        raise BackupError(f"{final} exists already (one backup per second at most)")
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            writer = ArchiveWriter(tar, started.timestamp())
            dumped = {}
            for name in order:
                member = f"databases/{name}.dump"
                handle, name_on_disk = tempfile.mkstemp(dir=settings.directory, prefix=".dump-")
                os.close(handle)  # pg_dump writes it by name
                scratch = Path(name_on_disk)
                try:
                    dumped[name] = {"member": member, **db.dump(server, name, scratch)}
                    writer.add_file(member, scratch)
                finally:
                    scratch.unlink(missing_ok=True)
            # After every snapshot: each artifact the dumped store refers to is in the bucket by now.
            stored = objects.back_up(s3, settings.bucket, writer)
            manifest = {
                "format": FORMAT,
                "created": started.isoformat(timespec="seconds"),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                "platform_version": os.environ.get("PLATFORM_VERSION", "unknown"),
                "tools": tools,
                "dump_order": order,
                "mlflow_database": settings.mlflow_database,
                "mlflow_schema_revision": dumped.get(settings.mlflow_database, {})
                .get("schema_revisions", {})
                .get("alembic_version"),
                "databases": dumped,
                "objects": {"bucket": settings.bucket, **stored},
            }
            writer.add_manifest(manifest)
        fsync_and_rename(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final, manifest


def size_text(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover


def summary(path: Path, manifest: dict[str, Any], seconds: float) -> str:
    """What `make backup` prints: where the archive is and what it holds."""
    parts = []
    for name in manifest["dump_order"]:
        tables = manifest["databases"][name]["tables"]
        text = f"{name} ({len(tables)} tables, {sum(tables.values()):,} rows"
        if name == manifest["mlflow_database"]:
            wanted = {"runs": "runs", "registered_models": "registered models", "model_versions": "versions"}
            text += "".join(
                f", {tables[f'public.{t}']:,} {label}"
                for t, label in wanted.items()
                if f"public.{t}" in tables
            )
        parts.append(text + ")")
    stored = manifest["objects"]
    tools = manifest["tools"]
    lines = [
        f"backup: {path} ({size_text(path.stat().st_size)}, {seconds:.1f} s)",
        f"  databases: {', '.join(parts)}",
        f"  objects: {stored['count']:,} from bucket {stored['bucket']} ({size_text(stored['bytes'])})"
        + (f"; {stored['vanished']} deleted while copying" if stored["vanished"] else ""),
        f"  MLflow schema {manifest['mlflow_schema_revision']}; {tools['pg_dump']}; "
        f"server {tools['postgres_server']}",
    ]
    return "\n".join(lines)


def target_problems(settings: Settings, server: db.Server, s3: Any, manifest: dict[str, Any]) -> list[str]:
    """What the restore would overwrite: user data in the archived databases, objects in the bucket."""
    found = []
    for name in manifest["dump_order"]:
        if name != settings.auth_database and (data := db.user_data(server, name, settings.mlflow_database)):
            found.append(data)
    if not objects.bucket_is_empty(s3, settings.bucket):
        found.append(f"objects in bucket {settings.bucket}")
    return found


class RestoreIncomplete(BackupError):
    """A restore failed after it changed the target (the CLI exits 2: re-run it with --force)."""


def restore_archive(settings: Settings, path: Path, force: bool, check_only: bool = False) -> str:
    """Check the archive, refuse a target with data unless `force`, upload the objects, restore each
    database as a whole (restored aside, then swapped in; MLflow's last), then compare counts with
    the manifest. `check_only`: stop after the checks (make restore runs them before it stops the
    writers)."""
    manifest = verify(path)  # before anything is touched
    server = db.Server.from_uri(settings.admin_uri)
    s3 = objects.client(settings.endpoint_url)
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
    ensure_bucket(s3, settings.bucket)
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
                reader = objects.restore(s3, settings.bucket, key, handle)
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
    present = objects.sizes(s3, settings.bucket)
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
        f"and {stored['count']:,} objects ({size_text(stored['bytes'])}) in bucket {settings.bucket}, "
        "counts verified" + (f"; {extra} object(s) not in the archive left in place" if extra else "")
    )


def upgrade_schemas(settings: Settings) -> str:
    """`mlflow db upgrade` on MLflow's store, the auth store's migrations and the prediction log's
    (contracts/predlog_migrations; a log from before them is stamped, its rows kept): with the writers
    stopped and after a backup (make upgrade). Returns the revisions before and after."""
    from mlflow.db import upgrade  # noqa: PLC0415  (MLflow loads slowly: only this command needs it)
    from mlflow.server.auth.db.utils import migrate  # noqa: PLC0415
    from sqlalchemy import create_engine  # noqa: PLC0415

    server = db.Server.from_uri(settings.admin_uri)
    stores = [settings.mlflow_database, settings.auth_database, MONITORING_DATABASE]

    def revisions() -> dict[str, str]:
        found = {}
        for name in stores:
            if db.database_exists(server, name):
                with server.cursor(name) as cur:
                    found.update({f"{name}.{t}": r for t, r in db.schema_revisions(cur).items()})
        return found

    before = revisions()
    if db.database_exists(server, settings.mlflow_database):
        with server.cursor(settings.mlflow_database) as cur:
            drop_grafana_views(cur)  # they would block migrating their columns; MLflow's start makes them
    admin = sqlalchemy_uri(settings.admin_uri)
    upgrade.main([database_uri(admin, settings.mlflow_database)], standalone_mode=False)
    db.ensure_database(server, settings.auth_database)
    engine = create_engine(database_uri(admin, settings.auth_database))
    try:
        migrate(engine, "head")
    finally:
        engine.dispose()
    if db.database_exists(server, MONITORING_DATABASE):  # else create-databases makes it at `make up`
        apply_schema(database_uri(admin, MONITORING_DATABASE))
    after = revisions()
    changes = [f"{key} {before.get(key, 'none')} -> {after[key]}" for key in sorted(after)]
    return "upgrade: " + "; ".join(changes)


def run_backup(settings: Settings) -> str:
    started = time.monotonic()
    path, manifest = create_backup(settings)
    return summary(path, manifest, time.monotonic() - started)
