"""`backup`: every database (MLflow's store last) and the bucket's objects into one archive, with a
manifest; safe while the platform runs (docs/operations.md says why the order makes it consistent)."""

from __future__ import annotations

import os
import platform
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from services.backup import Settings, objects
from services.backup import databases as db
from services.backup.archive import (
    FORMAT,
    ArchiveWriter,
    BackupError,
    fsync_and_rename,
)
from services.backup.report import summary


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
    server = db.Server.from_uri(settings.postgres.admin_uri)
    s3 = objects.client(settings.s3.endpoint_url)
    names = [n.strip() for n in settings.databases.split(",") if n.strip()] or db.list_databases(server)
    order = dump_order(names, settings.mlflow.database)
    tools = versions(server)
    if db.major(tools["pg_dump"]) < db.major(tools["postgres_server"]):
        raise BackupError(f"{tools['pg_dump']} cannot dump a PostgreSQL {tools['postgres_server']} server")
    settings.dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    final = settings.dir / f"mlops-{started:%Y%m%dT%H%M%SZ}.tar"
    partial = final.with_name(f".{final.name}.partial")
    if final.exists() or partial.exists():
        raise BackupError(f"{final} exists already (one backup per second at most)")
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            writer = ArchiveWriter(tar, started.timestamp())
            dumped = {}
            for name in order:
                member = f"databases/{name}.dump"
                handle, name_on_disk = tempfile.mkstemp(dir=settings.dir, prefix=".dump-")
                os.close(handle)  # pg_dump writes it by name
                scratch = Path(name_on_disk)
                try:
                    dumped[name] = {"member": member, **db.dump(server, name, scratch)}
                    writer.add_file(member, scratch)
                finally:
                    scratch.unlink(missing_ok=True)
            # After every snapshot: each artifact the dumped store refers to is in the bucket by now.
            stored = objects.back_up(s3, settings.s3.bucket, writer)
            manifest = {
                "format": FORMAT,
                "created": started.isoformat(timespec="seconds"),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                "platform_version": os.environ.get("PLATFORM_VERSION", "unknown"),
                "tools": tools,
                "dump_order": order,
                "mlflow_database": settings.mlflow.database,
                "mlflow_schema_revision": dumped.get(settings.mlflow.database, {})
                .get("schema_revisions", {})
                .get("alembic_version"),
                "databases": dumped,
                "objects": {"bucket": settings.s3.bucket, **stored},
            }
            writer.add_manifest(manifest)
        fsync_and_rename(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final, manifest


def run_backup(settings: Settings) -> str:
    started = time.monotonic()
    path, manifest = create_backup(settings)
    return summary(path, manifest, time.monotonic() - started)
