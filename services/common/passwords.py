"""Secrets: generating them, and refusing weak ones before anything starts with them.

The access job checks the secrets it provisions with, the MLflow server's start-up checks the ones
it writes into basic-auth's config (services/mlflow/auth_config.py), and the local launcher
generates its own. Standard library only: `make participant` runs services/access with the host's
python3 before any venv exists.
"""

from __future__ import annotations

import secrets

# MLflow refuses shorter passwords; .env values shorter than this are refused at start.
MIN_PASSWORD = 12
_PLACEHOLDERS = {"admin", "password", "changeme", "mlflow", "secret", "admin1234567", "password1234"}


def generate_password() -> str:
    """A fresh random secret, URL-safe and well over MIN_PASSWORD characters."""
    return secrets.token_urlsafe(18)


def weak_password_problem(name: str, value: str | None) -> str | None:
    """Why `value` may not be used as the secret `name`, or None."""
    if not value:
        return f"{name} is not set: run `make env` (it adds missing secrets to .env)"
    if len(value) < MIN_PASSWORD or value.lower() in _PLACEHOLDERS or "change" in value.lower():
        return (
            f"{name} is weak (under {MIN_PASSWORD} characters or a placeholder): "
            "delete the line and run `make env`"
        )
    return None
