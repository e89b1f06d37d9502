"""Bootstrap PostgreSQL for the platform (idempotent, as the superuser, at every start):

- the databases (`mlflow` comes from the postgres image on first start; the others must also
  appear on existing volumes);
- a login role per service (contracts/database.py), its password re-applied from .env;
- `mlflow` and `mlflow_auth` owned by MLflow's role, every object in them too (tables an older
  platform, a restore or `make upgrade` created as the superuser are handed over);
- the prediction log's schema migrated to its newest revision (contracts/predlog_migrations) and
  exactly the grants each role needs;
- no database reachable by roles that have no business there (CONNECT revoked from PUBLIC).

Why each role may do what it may: docs/operations.md, "Database roles". The steps are in setup.py;
this file holds the settings only.
"""

from __future__ import annotations

from services.dbinit.settings import Settings

__all__ = ["Settings"]
