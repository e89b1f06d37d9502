"""Grafana's read-only login for participants (docs/operations.md, "Team access and threat model").

Grafana cannot create users from provisioning files, so the `create-grafana-viewer` job calls its
HTTP API as the admin, idempotently: the user is created when missing, and at every start its
password is set to GRAFANA_VIEWER_PASSWORD (.env stays the truth) and its organisation role back to
Viewer (read dashboards; no saving, no datasource or user administration).
"""

from __future__ import annotations

import time

from services.access.accounts import AccessError
from services.access.api import JsonApi

VIEWER_ROLE = "Viewer"


class GrafanaApi(JsonApi):
    """Grafana's HTTP API as one user (the admin, for provisioning)."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 30) -> None:
        super().__init__(url, username, password, "Grafana", "GRAFANA_ADMIN_PASSWORD", timeout)

    def wait_until_up(self, attempts: int, delay_s: float = 2.0) -> None:
        """Grafana may still be migrating its database right after it reports healthy."""
        for attempt in range(attempts):
            try:
                status, _ = self.call("GET", "/api/health")
                if status == 200:
                    return
            except AccessError:
                if attempt == attempts - 1:
                    raise
            time.sleep(delay_s)
        raise AccessError(f"Grafana at {self.base} did not become healthy")

    def user_id(self, login: str) -> int | None:
        status, answer = self.call("GET", "/api/users/lookup", {"loginOrEmail": login})
        if status == 404:
            return None
        if status != 200:
            raise AccessError(f"Grafana user lookup of {login!r} answered {status}: {answer.get('message')}")
        return int(answer["id"])


def ensure_viewer(api: GrafanaApi, login: str, password: str) -> str:
    """Create or update the viewer login; returns what was done (one line)."""
    user_id = api.user_id(login)
    if user_id is None:
        body = {"name": "Workshop viewer", "login": login, "password": password}
        user_id = int(api.expect("POST", "/api/admin/users", body)["id"])
        done = "created"
    else:
        api.expect("PUT", f"/api/admin/users/{user_id}/password", {"password": password})
        done = "exists; password set from .env"
    api.expect("PATCH", f"/api/org/users/{user_id}", {"role": VIEWER_ROLE})
    return f"Grafana viewer {login!r}: {done}, role {VIEWER_ROLE}"
