"""What the backup CLI prints: an exception as one line, sizes, a backup's summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg2
from botocore.exceptions import BotoCoreError, ClientError

from services.backup import databases as db
from services.backup import objects
from services.backup.archive import (
    BackupError,
)


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
