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

from services.backup.settings import Settings

__all__ = ["Settings"]
