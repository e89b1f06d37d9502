"""`python -m services.mlflow.auth_config PATH`: check the basic-auth secrets and write the auth app's
ini (MLFLOW_AUTH_CONFIG_PATH) from the environment, before the server starts.

The ini holds the user store's database URI (with its password), so it is written 0600 and never
passed on a command line; the admin password and the Flask secret key stay in the environment, where
MLflow reads them (MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY). A missing or weak
secret stops the start with one line naming it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from services.common.passwords import weak_password_problem

# Every resource without a grant is closed: accounts hold exactly their grants (services/access).
DEFAULT_PERMISSION = "NO_PERMISSIONS"
# MLflow checks a login's password with werkzeug's scrypt (32768:8:1), 0.17 s of CPU per check
# (`check_password_hash` in a loop here), and it checks several times per request: before it, for the
# admin test, for each permission, and again when redacting the answer. In `make e2e` the two server
# workers took 1.2 of the 2 cores, py-spy found them inside `check_password_hash` in 15 of 16 samples,
# and a request with a login waited 12-15 s (0.4-3 s without one). MLflow's own credential cache
# skips the check for a login seen within this many seconds. The price: a removed participant or a
# changed password stops working at once on the worker that handled the change, and within this time
# on the others (docs/operations.md, "Team access and threat model").
AUTH_CACHE_TTL_S = 10


def auth_ini(database_uri: str, admin_username: str = "admin") -> str:
    return (
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
    )


def problems(env: Mapping[str, str]) -> list[str]:
    found = [
        weak_password_problem(key, env.get(key))
        for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
    ]
    if not env.get("MLFLOW_AUTH_DATABASE_URI"):
        found.append("MLFLOW_AUTH_DATABASE_URI is not set (the user store's database)")
    return [problem for problem in found if problem]


def write_auth_ini(path: Path, env: Mapping[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(auth_ini(env["MLFLOW_AUTH_DATABASE_URI"], env.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin"))
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m services.mlflow.auth_config PATH", file=sys.stderr)
        return 2
    found = problems(os.environ)
    if found:
        print(f"mlflow: error: {found[0]}", file=sys.stderr)
        return 1
    write_auth_ini(Path(args[0]), os.environ)
    return 0


if __name__ == "__main__":
    sys.exit(main())
