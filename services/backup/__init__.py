"""Backups of the platform's data: every PostgreSQL database and the artifact bucket in one archive.

`backup` is safe while the platform runs; `restore` refuses a target that holds data unless forced;
`upgrade` migrates MLflow's schemas and the prediction log's (after a backup, with the writers
stopped: `make upgrade`).
Why the order of the copies makes a consistent archive: docs/operations.md.

One module per command: create.py (`backup`), restore.py (`restore`), upgrade.py (`upgrade`), with
archive.py (the archive format, `verify`), databases.py and objects.py (the two kinds of data) and
report.py (what the CLI prints) under them; __main__.py is the CLI. This file holds the settings
only, which every command module imports (so it imports none of them back).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings


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
