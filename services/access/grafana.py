"""Grafana's read-only login for participants (README, "Team access").

Grafana cannot create users from provisioning files, so the `create-grafana-viewer` job calls its
HTTP API as the admin, idempotently: the user is created when missing, and at every start its
password is set to GRAFANA_VIEWER_PASSWORD (.env stays the truth) and its organisation role back to
Viewer (read dashboards; no saving, no datasource or user administration).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

from services.access import AccessError

VIEWER_ROLE = "Viewer"


class GrafanaApi:
    """Grafana's HTTP API as one user (the admin, for provisioning)."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 30) -> None:
        self.base = url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self.timeout = timeout

    def call(self, method: str, path: str, body: Mapping[str, object] | None = None) -> tuple[int, dict]:
        """(status, JSON answer); raises AccessError when Grafana cannot be reached or refuses the login."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=self._headers)
        try:
            # The URL is the configured Grafana (GRAFANA_URL), never user input.
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # nosec B310
                status, text = answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            raise AccessError(f"Grafana at {self.base} is unreachable: {exc}") from exc
        if status == 401:
            raise AccessError(f"{self.base} refused the admin login (401): check GRAFANA_ADMIN_PASSWORD")
        try:
            parsed = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            parsed = {"message": text.strip()[:200]}
        return status, parsed if isinstance(parsed, dict) else {}

    def expect(self, method: str, path: str, body: Mapping[str, object] | None = None) -> dict:
        status, answer = self.call(method, path, body)
        if status != 200:
            raise AccessError(f"Grafana {method} {path} answered {status}: {answer.get('message', answer)}")
        return answer

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
        path = "/api/users/lookup?" + urllib.parse.urlencode({"loginOrEmail": login})
        status, answer = self.call("GET", path)
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
