"""The JSON HTTP APIs access provisions through, as one user with basic auth: MLflow's REST API
(`AuthApi`) here, Grafana's in grafana.py.

Standard library only (urllib; see services/access/__init__.py): `make participant` runs this with
the host's python3 before any venv exists.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

from contracts.experiments import TRAINING_EXPERIMENT_TAGS
from services.access.accounts import REGISTERED_MODEL, AccessError, Grant


class JsonApi:
    """A JSON HTTP API as one user with basic auth (an admin, for provisioning): MLflow's, Grafana's."""

    def __init__(
        self, url: str, username: str, password: str, what: str, password_setting: str, timeout: float = 30
    ) -> None:
        self.base = url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self.username = username
        self.what, self.password_setting, self.timeout = what, password_setting, timeout

    def call(self, method: str, path: str, body: Mapping[str, object] | None = None) -> tuple[int, dict]:
        """(status, JSON answer) of one request (a GET's body goes in the query string); raises
        AccessError when the server cannot be reached or refuses the login."""
        url = self.base + path
        data = None
        if method == "GET" and body:
            url += "?" + urllib.parse.urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers=self._headers)
        try:
            # The URL is the configured server (from .env or the compose file), never user input.
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # nosec B310
                status, text = answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            raise AccessError(f"{self.what} at {self.base} is unreachable: {exc}") from exc
        if status == 401:
            raise AccessError(f"{self.base} refused the admin login (401): check {self.password_setting}")
        try:
            parsed = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            parsed = {"message": text.strip()[:200]}
        return status, parsed if isinstance(parsed, dict) else {}

    def expect(self, method: str, path: str, body: Mapping[str, object] | None = None) -> dict:
        status, answer = self.call(method, path, body)
        if status != 200:
            raise AccessError(
                f"{self.what}: {method} {path} answered {status}: {answer.get('message', answer)}"
            )
        return answer


class AuthApi(JsonApi):
    """The tracking server's REST API as one user (the admin, for provisioning)."""

    def __init__(self, tracking_uri: str, username: str, password: str, timeout: float = 30) -> None:
        super().__init__(
            tracking_uri, username, password, "the tracking server", "MLFLOW_AUTH_ADMIN_PASSWORD", timeout
        )

    # --- users -----------------------------------------------------------------------------
    def user_exists(self, username: str) -> bool:
        status, answer = self.call("GET", "/api/2.0/mlflow/users/get", {"username": username})
        if status == 404:
            return False
        if status != 200:
            raise AccessError(f"looking up user {username!r} answered {status}: {answer.get('message')}")
        return True

    def is_admin(self, username: str) -> bool:
        answer = self.expect("GET", "/api/2.0/mlflow/users/get", {"username": username})
        return bool(answer["user"]["is_admin"])

    def usernames(self) -> list[str]:
        return [str(user["username"]) for user in self.expect("GET", "/api/2.0/mlflow/users/list")["users"]]

    def create_user(self, username: str, password: str) -> None:
        self.expect("POST", "/api/2.0/mlflow/users/create", {"username": username, "password": password})

    def set_password(self, username: str, password: str) -> None:
        self.expect(
            "PATCH", "/api/2.0/mlflow/users/update-password", {"username": username, "password": password}
        )

    def set_admin(self, username: str, admin: bool) -> None:
        self.expect("PATCH", "/api/2.0/mlflow/users/update-admin", {"username": username, "is_admin": admin})

    def delete_user(self, username: str) -> bool:
        """Delete the user and its grants; False when there was none."""
        if not self.user_exists(username):
            return False
        self.expect("DELETE", "/api/2.0/mlflow/users/delete", {"username": username})
        return True

    def grants(self, username: str) -> dict[tuple[str, str], str]:
        """(resource type, id or *) -> permission, as granted to the user itself."""
        answer = self.expect("GET", "/api/3.0/mlflow/users/permissions/list", {"username": username})
        own = "__user_"  # the user's own grants, not those of roles it holds
        return {
            (row["resource_type"], row["resource_pattern"]): row["permission"]
            for row in answer.get("permissions", [])
            if str(row.get("role_name", "")).startswith(own)
        }

    def grant(self, username: str, resource_type: str, resource_id: str, permission: str) -> bool:
        """Make the user's grant on the resource exactly `permission`; True when it changed."""
        current = self.grants(username).get((resource_type, resource_id))
        if current == permission:
            return False
        target = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
        if current is not None:
            self.expect("POST", "/api/3.0/mlflow/users/permissions/revoke", target)
        self.expect("POST", "/api/3.0/mlflow/users/permissions/grant", {**target, "permission": permission})
        return True

    # --- resources -------------------------------------------------------------------------
    def experiment_id(self, name: str, create: bool = True) -> str | None:
        """The experiment's id; created when missing (and `create`), tagged as a model-training
        experiment either way (contracts/experiments.py: how the MLflow UI shows it)."""
        status, answer = self.call(
            "GET", "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": name}
        )
        if status == 200:
            experiment = answer["experiment"]
            if create:
                self.tag_model_training(experiment)
            return str(experiment["experiment_id"])
        if not create:
            return None
        tags = [{"key": key, "value": value} for key, value in TRAINING_EXPERIMENT_TAGS.items()]
        created = self.expect("POST", "/api/2.0/mlflow/experiments/create", {"name": name, "tags": tags})
        return str(created["experiment_id"])

    def tag_model_training(self, experiment: Mapping[str, object]) -> None:
        """Set the model-training kind on an existing experiment that lacks it."""
        raw = experiment.get("tags")
        have = {t["key"]: t["value"] for t in raw} if isinstance(raw, list) else {}
        for key, value in TRAINING_EXPERIMENT_TAGS.items():
            if have.get(key) != value:
                body = {"experiment_id": experiment["experiment_id"], "key": key, "value": value}
                self.expect("POST", "/api/2.0/mlflow/experiments/set-experiment-tag", body)

    def ensure_registered_model(self, name: str) -> bool:
        status, _ = self.call("GET", "/api/2.0/mlflow/registered-models/get", {"name": name})
        if status == 200:
            return False
        self.expect("POST", "/api/2.0/mlflow/registered-models/create", {"name": name})
        return True

    def resource_id(self, grant: Grant) -> str:
        if grant.resource == "*" or grant.resource_type == REGISTERED_MODEL:
            return grant.resource
        found = self.experiment_id(grant.resource)
        assert found is not None  # noqa: S101  (create=True never returns None)
        return found
