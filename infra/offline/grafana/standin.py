"""Offline stand-in for grafana/grafana: loads provisioning like Grafana, serves a small API.

Why: no Grafana image or package is reachable on the project's machines, yet the stack's
provisioning files (datasources, dashboard providers, dashboard JSON) must be checked, and the
stack needs a `grafana` service that becomes healthy. This server:

- loads <provisioning>/datasources/*.y(a)ml and <provisioning>/dashboards/*.y(a)ml as Grafana does
  (apiVersion, lists, `$VAR` / `${VAR}` environment interpolation, `$$` for a literal `$`), then
  every dashboard JSON under each file provider's options.path;
- exits non-zero with a clear message on invalid YAML/JSON, a missing dashboards folder, duplicate
  datasource/dashboard uids, more than one default datasource, or a dashboard/panel/target/variable
  whose datasource reference ({"type", "uid"} object or a name) matches no provisioned datasource
  (or names a different type). Built-in ("-- Grafana --", "grafana", "-- Mixed --",
  "-- Dashboard --") and template-variable (`$x`, `${x}`) references are not checked;
- serves on :3000 GET /api/health (no auth), and with basic auth (the admin from
  GF_SECURITY_ADMIN_USER / GF_SECURITY_ADMIN_PASSWORD, or a user the admin created):
  GET /api/search, /api/dashboards/uid/<uid>, /api/user; admins also /api/datasources,
  /api/datasources/uid/<uid>, /api/datasources/name/<name>;
- users like Grafana's admin API (services/access/grafana.py uses it): GET /api/users/lookup,
  POST /api/admin/users (role GF_USERS_AUTO_ASSIGN_ORG_ROLE, default Viewer),
  PUT /api/admin/users/<id>/password, PATCH /api/org/users/<id> {"role"}; kept in
  GF_PATHS_DATA/standin-users.json (salted PBKDF2 hashes). Non-admins get 403 there, and viewers 403
  on POST /api/dashboards/db (saving); for others saving answers 400 (a provisioned dashboard cannot
  be saved, as in Grafana; the stand-in stores no other).

It renders nothing and queries no datasource. Use `--check` to validate provisioning and exit.

Run directly: python3 standin.py --provisioning DIR [--port N] [--check]
                 [--map-path /etc/grafana/dashboards=grafana/dashboards]
(--map-path rewrites a provider's container path to a host folder; environment:
GF_PATHS_PROVISIONING, GF_SERVER_HTTP_ADDR, GF_SERVER_HTTP_PORT, GF_PATHS_DATA).
Needs Python 3.9+ and PyYAML.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

# The grafana/grafana tag it stands in for (docker-compose.yml); /api/health says "offline-standin" as
# its commit.
VERSION = "11.6.16"
log = logging.getLogger("grafana-standin")

# Datasource references that are not provisioned datasources.
BUILTIN_DATASOURCES = {"grafana", "-- grafana --", "-- mixed --", "-- dashboard --", "__expr__"}
ENV_PATTERN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class ProvisioningError(Exception):
    """Provisioning that Grafana would refuse (or that would leave panels without data)."""


def interpolate(value: Any) -> Any:
    """Replace $VAR / ${VAR} in every string of a parsed YAML document ($$ -> $)."""
    if isinstance(value, str):
        return ENV_PATTERN.sub(
            lambda m: "$" if m.group(0) == "$$" else os.environ.get(m.group(1) or m.group(2), ""),
            value,
        )
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def read_yaml_files(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Parsed, interpolated YAML documents of folder/*.yaml|*.yml (missing folder: none)."""
    if not folder.is_dir():
        return []
    documents = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in {".yaml", ".yml"}):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ProvisioningError(f"{path}: invalid YAML: {error}") from error
        if document is None:
            continue
        if not isinstance(document, dict):
            raise ProvisioningError(f"{path}: expected a mapping at the top level")
        documents.append((path, interpolate(document)))
    return documents


def slugify(title: str) -> str:
    """Grafana-style URL slug of a dashboard title."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


@dataclass
class Dashboard:
    """One provisioned dashboard."""

    id: int
    uid: str
    title: str
    model: dict[str, Any]
    path: Path
    provider: str
    folder: str


@dataclass
class Provisioned:
    """Everything loaded from the provisioning folder."""

    datasources: list[dict[str, Any]] = field(default_factory=list)
    dashboards: list[Dashboard] = field(default_factory=list)


def load_datasources(provisioning: Path) -> list[dict[str, Any]]:
    """Datasources of provisioning/datasources, validated like Grafana's provisioner."""
    datasources: list[dict[str, Any]] = []
    for path, document in read_yaml_files(provisioning / "datasources"):
        entries = document.get("datasources") or []
        if not isinstance(entries, list):
            raise ProvisioningError(f"{path}: 'datasources' must be a list")
        for entry in entries:
            if not isinstance(entry, dict):
                raise ProvisioningError(f"{path}: every datasource must be a mapping")
            for required in ("name", "type"):
                if not entry.get(required):
                    raise ProvisioningError(f"{path}: datasource without '{required}': {entry}")
            datasources.append({**entry, "_file": str(path)})
    seen_uids: dict[str, str] = {}
    seen_names: set[str] = set()
    for source in datasources:
        name, uid = source["name"], source.get("uid")
        if name in seen_names:
            raise ProvisioningError(f"datasource name {name!r} is provisioned twice")
        seen_names.add(name)
        if uid:
            if uid in seen_uids:
                raise ProvisioningError(f"datasource uid {uid!r} is used by {seen_uids[uid]!r} and {name!r}")
            seen_uids[uid] = name
    defaults = [s["name"] for s in datasources if s.get("isDefault")]
    if len(defaults) > 1:
        raise ProvisioningError(f"only one datasource per organization can be marked as default: {defaults}")
    for number, source in enumerate(datasources, start=1):
        source["id"] = number
    return datasources


def datasource_references(node: Any, where: str = "") -> list[tuple[str, Any]]:
    """Every `datasource` value in a dashboard JSON, with a readable location."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                if value is not None:
                    found.append((where.lstrip(".") or "dashboard", value))
            else:
                found += datasource_references(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            label = (
                (item.get("title") or item.get("refId") or item.get("name"))
                if isinstance(item, dict)
                else None
            )
            found += datasource_references(item, f"{where}[{index}]" + (f" ({label!r})" if label else ""))
    return found


def is_unchecked(reference: str) -> bool:
    """Built-in datasources and template variables are not provisioned datasources."""
    return reference.lower() in BUILTIN_DATASOURCES or reference.startswith("$")


def check_references(dashboard: Dashboard, datasources: list[dict[str, Any]]) -> None:
    """Fail when a panel, target or variable names a datasource that is not provisioned."""
    by_uid = {s["uid"]: s for s in datasources if s.get("uid")}
    by_name = {s["name"]: s for s in datasources}
    for where, reference in datasource_references(dashboard.model):
        if isinstance(reference, str):
            if is_unchecked(reference) or reference in by_name or reference in by_uid:
                continue
            raise ProvisioningError(f"{dashboard.path}: {where}: datasource {reference!r} is not provisioned")
        if not isinstance(reference, dict):
            raise ProvisioningError(f"{dashboard.path}: {where}: datasource must be an object or a name")
        uid = reference.get("uid")
        if uid is None or not isinstance(uid, str) or is_unchecked(uid):
            continue
        source = by_uid.get(uid)
        if source is None:
            raise ProvisioningError(
                f"{dashboard.path}: {where}: datasource uid {uid!r} matches no provisioned datasource "
                f"(provisioned uids: {sorted(by_uid)})"
            )
        wanted_type = reference.get("type")
        if wanted_type and not str(wanted_type).startswith("$") and wanted_type != source["type"]:
            raise ProvisioningError(
                f"{dashboard.path}: {where}: datasource uid {uid!r} is of type {source['type']!r}, "
                f"not {wanted_type!r}"
            )


def map_path(path: str, path_map: dict[str, str]) -> Path:
    """A provider path with its longest matching container prefix replaced by a host folder."""
    for prefix in sorted(path_map, key=len, reverse=True):
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return Path(path_map[prefix] + path[len(prefix) :])
    return Path(path)


def load_dashboards(
    provisioning: Path, datasources: list[dict[str, Any]], path_map: dict[str, str]
) -> list[Dashboard]:
    """Dashboards of every file provider in provisioning/dashboards, references checked."""
    dashboards: list[Dashboard] = []
    for path, document in read_yaml_files(provisioning / "dashboards"):
        providers = document.get("providers") or []
        if not isinstance(providers, list):
            raise ProvisioningError(f"{path}: 'providers' must be a list")
        for provider in providers:
            if not isinstance(provider, dict):
                raise ProvisioningError(f"{path}: every provider must be a mapping")
            name = provider.get("name") or "default"
            if provider.get("type", "file") != "file":
                raise ProvisioningError(f"{path}: provider {name!r}: only type 'file' exists")
            folder_path = (provider.get("options") or {}).get("path")
            if not folder_path:
                raise ProvisioningError(f"{path}: provider {name!r} has no options.path")
            folder = map_path(str(folder_path), path_map)
            if not folder.exists():
                raise ProvisioningError(f"{path}: provider {name!r}: options.path {folder} does not exist")
            files = [folder] if folder.is_file() else sorted(folder.rglob("*.json"))
            for file in files:
                try:
                    model = json.loads(file.read_text(encoding="utf-8"))
                except (ValueError, UnicodeDecodeError) as error:
                    raise ProvisioningError(f"{file}: invalid JSON: {error}") from error
                if not isinstance(model, dict):
                    raise ProvisioningError(f"{file}: a dashboard must be a JSON object")
                if "dashboard" in model and isinstance(model["dashboard"], dict) and "panels" not in model:
                    model = model["dashboard"]  # exported with the API wrapper
                title = model.get("title")
                if not title:
                    raise ProvisioningError(f"{file}: dashboard title cannot be empty")
                uid = model.get("uid") or slugify(title)
                dashboards.append(
                    Dashboard(
                        len(dashboards) + 1, uid, title, model, file, name, provider.get("folder") or ""
                    )
                )
    seen: dict[str, Path] = {}
    for dashboard in dashboards:
        if dashboard.uid in seen:
            raise ProvisioningError(
                f"dashboard uid {dashboard.uid!r} used by {seen[dashboard.uid]} and {dashboard.path}"
            )
        seen[dashboard.uid] = dashboard.path
        check_references(dashboard, datasources)
    return dashboards


def load_provisioning(provisioning: Path, path_map: dict[str, str] | None = None) -> Provisioned:
    """Load and validate the whole provisioning folder."""
    if not provisioning.is_dir():
        raise ProvisioningError(f"provisioning folder {provisioning} does not exist")
    for other in ("alerting", "plugins", "notifiers"):
        if read_yaml_files(provisioning / other):
            log.warning("%s/ provisioning is parsed for syntax only by this stand-in", other)
    datasources = load_datasources(provisioning)
    return Provisioned(datasources, load_dashboards(provisioning, datasources, path_map or {}))


def public_datasource(source: dict[str, Any]) -> dict[str, Any]:
    """A datasource as Grafana's API shows it (secrets hidden)."""
    shown = {k: v for k, v in source.items() if not k.startswith("_") and k != "secureJsonData"}
    shown.setdefault("uid", "")
    shown.setdefault("orgId", 1)
    shown.setdefault("access", "proxy")
    shown.setdefault("url", "")
    shown.setdefault("isDefault", False)
    shown.setdefault("jsonData", {})
    shown["readOnly"] = True
    shown["secureJsonFields"] = {k: True for k in (source.get("secureJsonData") or {})}
    return shown


ROLES = ("Viewer", "Editor", "Admin")


class Users:
    """Users besides the admin (Grafana keeps them in its database; here a JSON file in the data
    path), made through the admin API. Passwords are stored as salted PBKDF2 hashes."""

    def __init__(self, path: Path | None, default_role: str = "Viewer") -> None:
        self.path = path
        self.default_role = default_role if default_role in ROLES else "Viewer"
        self.lock = threading.Lock()
        self.users: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            self.users = {u["login"]: u for u in json.loads(path.read_text(encoding="utf-8"))}

    @staticmethod
    def digest(password: str, salt: str) -> str:
        return hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), 100_000).hex()

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(list(self.users.values())), encoding="utf-8")
        tmp.chmod(0o600)
        os.replace(tmp, self.path)

    def by_id(self, user_id: str) -> dict[str, Any] | None:
        return next((u for u in self.users.values() if str(u["id"]) == user_id), None)

    def create(self, login: str, name: str, password: str) -> dict[str, Any]:
        with self.lock:
            user = {"id": max([1, *(u["id"] for u in self.users.values())]) + 1, "login": login,
                    "name": name or login, "role": self.default_role}  # fmt: skip
            self.users[login] = user
            self.set_password(user, password)
        return user

    def set_password(self, user: dict[str, Any], password: str) -> None:
        user["salt"] = secrets.token_hex(16)
        user["hash"] = self.digest(password, user["salt"])
        self.save()

    def set_role(self, user: dict[str, Any], role: str) -> None:
        user["role"] = role
        self.save()

    def authenticate(self, login: str, password: str) -> dict[str, Any] | None:
        user = self.users.get(login)
        if user is None or not hmac.compare_digest(user["hash"], self.digest(password, user["salt"])):
            return None
        return user


def make_handler(
    state: Provisioned, user: str, password: str, users: Users | None = None
) -> type[BaseHTTPRequestHandler]:
    """Request handler bound to the loaded provisioning, the admin credentials and the users."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    admin = {"id": 1, "login": user, "name": user, "role": "Admin", "isGrafanaAdmin": True}
    known = users if users is not None else Users(None)

    class Handler(BaseHTTPRequestHandler):
        server_version = f"grafana-standin/{VERSION}"

        def identity(self) -> dict[str, Any] | None:
            """The admin or a known user named by the basic-auth header, else None."""
            header = self.headers.get("Authorization", "")
            if hmac.compare_digest(header, expected):
                return admin
            if not header.startswith("Basic "):
                return None
            try:
                login, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return known.authenticate(login, secret)

        def read_json(self) -> dict[str, Any] | None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return None
            return body if isinstance(body, dict) else None

        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            who = self.identity()
            if who is None:
                return self.send_json(401, {"message": "Unauthorized"})
            body = self.read_json()
            if body is None:
                return self.send_json(400, {"message": "bad request data"})
            path = urllib.parse.urlsplit(self.path).path.rstrip("/")
            if path == "/api/admin/users":
                if who is not admin:
                    return self.send_json(403, {"message": "Permission denied"})
                login, secret = str(body.get("login") or ""), str(body.get("password") or "")
                if not login or len(secret) < 4 or login == user or login in known.users:
                    return self.send_json(
                        412 if login in known.users else 400, {"message": "user not created"}
                    )
                created = known.create(login, str(body.get("name") or ""), secret)
                return self.send_json(200, {"id": created["id"], "message": "User created"})
            if path == "/api/dashboards/db":
                if who["role"] == "Viewer":
                    return self.send_json(403, {"message": "Access denied", "title": "Access denied"})
                uid = str((body.get("dashboard") or {}).get("uid") or "")
                if any(d.uid == uid for d in state.dashboards):
                    return self.send_json(400, {"message": "Cannot save provisioned dashboard"})
                return self.send_json(400, {"message": "the offline stand-in stores no dashboards"})
            return self.send_json(404, {"message": "Not found (offline Grafana stand-in)"})

        def do_PUT(self) -> None:  # noqa: N802 (http.server naming)
            self.change_user("PUT")

        def do_PATCH(self) -> None:  # noqa: N802 (http.server naming)
            self.change_user("PATCH")

        def change_user(self, method: str) -> None:
            """PUT /api/admin/users/<id>/password and PATCH /api/org/users/<id> (admin only)."""
            who = self.identity()
            if who is None:
                return self.send_json(401, {"message": "Unauthorized"})
            parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
            password_route = method == "PUT" and len(parts) == 5 and parts[1:3] == ["admin", "users"]
            role_route = method == "PATCH" and len(parts) == 4 and parts[1:3] == ["org", "users"]
            if not (password_route and parts[4] == "password") and not role_route:
                return self.send_json(404, {"message": "Not found (offline Grafana stand-in)"})
            if who is not admin:
                return self.send_json(403, {"message": "Permission denied"})
            target, body = known.by_id(parts[3]), self.read_json()
            if target is None:
                return self.send_json(404, {"message": "user not found"})
            if body is None:
                return self.send_json(400, {"message": "bad request data"})
            if role_route:
                if body.get("role") not in ROLES:
                    return self.send_json(400, {"message": "invalid role"})
                known.set_role(target, str(body["role"]))
                return self.send_json(200, {"message": "Organization user updated"})
            if len(str(body.get("password") or "")) < 4:
                return self.send_json(400, {"message": "New password is too short"})
            known.set_password(target, str(body["password"]))
            return self.send_json(200, {"message": "User password updated"})

        def send_json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            url = urllib.parse.urlsplit(self.path)
            path, query = url.path.rstrip("/") or "/", urllib.parse.parse_qs(url.query)
            if path == "/api/health":
                return self.send_json(
                    200, {"commit": "offline-standin", "database": "ok", "version": VERSION}
                )
            if not path.startswith("/api/"):
                page = (
                    b"<!doctype html><title>Grafana stand-in</title><h1>Grafana stand-in</h1>"
                    b"<p>Offline stand-in for grafana/grafana (infra/offline/README.md): it loads "
                    b"provisioning and serves a small API; it renders nothing.</p>"
                )
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(page)
                return None
            who = self.identity()
            if who is None:
                return self.send_json(401, {"message": "Unauthorized"})
            return self.route_api(path, query, who)

        do_HEAD = do_GET

        def route_api(self, path: str, query: dict[str, list[str]], who: dict[str, Any]) -> None:
            parts = path.split("/")[2:]  # after /api/
            if parts == ["user"]:
                shown = {k: who[k] for k in ("id", "login", "name")}
                return self.send_json(200, {**shown, "isGrafanaAdmin": who is admin, "orgId": 1})
            if parts[:1] in (["datasources"], ["users"]) and who is not admin:
                return self.send_json(403, {"message": "Permission denied"})
            if parts == ["users", "lookup"]:
                login = (query.get("loginOrEmail") or [""])[0]
                found = admin if login == user else known.users.get(login)
                if found is None:
                    return self.send_json(404, {"message": "user not found"})
                return self.send_json(200, {k: found[k] for k in ("id", "login", "name")})
            if parts == ["search"]:
                return self.send_json(200, self.search(query))
            if parts[:2] == ["dashboards", "uid"] and len(parts) == 3:
                for dashboard in state.dashboards:
                    if dashboard.uid == parts[2]:
                        return self.send_json(200, self.wrap(dashboard, who))
                return self.send_json(404, {"message": "Dashboard not found"})
            if parts == ["datasources"]:
                return self.send_json(200, [public_datasource(s) for s in state.datasources])
            if parts[:1] == ["datasources"] and len(parts) == 3 and parts[1] in {"uid", "name"}:
                wanted = urllib.parse.unquote(parts[2])
                for source in state.datasources:
                    if source.get(parts[1]) == wanted:
                        return self.send_json(200, public_datasource(source))
                return self.send_json(404, {"message": "Data source not found"})
            return self.send_json(404, {"message": "Not found (offline Grafana stand-in)"})

        def search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
            text = (query.get("query") or [""])[0].lower()
            tags = set(query.get("tag") or [])
            uids = set(query.get("dashboardUIDs") or [])
            types = set(query.get("type") or ["dash-db"])
            if "dash-db" not in types:
                return []
            hits = []
            for d in state.dashboards:
                dashboard_tags = d.model.get("tags") or []
                if text and text not in d.title.lower():
                    continue
                if tags and not tags.issubset(dashboard_tags) or uids and d.uid not in uids:
                    continue
                slug = slugify(d.title)
                hits.append(
                    {
                        "id": d.id,
                        "uid": d.uid,
                        "title": d.title,
                        "uri": f"db/{slug}",
                        "url": f"/d/{d.uid}/{slug}",
                        "slug": "",
                        "type": "dash-db",
                        "tags": dashboard_tags,
                        "isStarred": False,
                        "folderTitle": d.folder or None,
                    }
                )
            return sorted(hits, key=lambda hit: hit["title"].lower())

        def wrap(self, d: Dashboard, who: dict[str, Any]) -> dict[str, Any]:
            slug = slugify(d.title)
            model = {**d.model, "id": d.id, "uid": d.uid, "version": d.model.get("version", 1)}
            meta = {
                "type": "db",
                "canSave": who["role"] != "Viewer",
                "canEdit": who["role"] != "Viewer",
                "canAdmin": who is admin,
                "slug": slug,
                "url": f"/d/{d.uid}/{slug}",
                "provisioned": True,
                "provisionedExternalId": d.path.name,
                "folderTitle": d.folder or "General",
                "folderUid": "",
                "version": model["version"],
            }
            return {"dashboard": model, "meta": meta}

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("%s %s", self.address_string(), format % args)

    return Handler


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description="Offline Grafana stand-in (provisioning check + small API)")
    parser.add_argument(
        "--provisioning",
        type=Path,
        default=Path(os.environ.get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning")),
    )
    parser.add_argument("--host", default=os.environ.get("GF_SERVER_HTTP_ADDR") or "0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GF_SERVER_HTTP_PORT") or 3000))
    parser.add_argument("--check", action="store_true", help="validate provisioning, then exit")
    parser.add_argument(
        "--map-path",
        action="append",
        default=[],
        metavar="CONTAINER=HOST",
        help="read a provider's options.path CONTAINER from the folder HOST (repeatable)",
    )
    args = parser.parse_args(argv)
    path_map = dict(item.split("=", 1) for item in args.map_path if "=" in item)

    log.warning(
        "STAND-IN for grafana/grafana %s: loads provisioning, serves a small API, renders nothing",
        VERSION.split("-")[0],
    )
    try:
        state = load_provisioning(args.provisioning, path_map)
    except ProvisioningError as error:
        log.error("provisioning failed: %s", error)
        return 1
    log.info(
        "provisioned %d datasource(s) %s and %d dashboard(s) %s from %s",
        len(state.datasources),
        [s.get("uid") or s["name"] for s in state.datasources],
        len(state.dashboards),
        [d.uid for d in state.dashboards],
        args.provisioning,
    )
    if args.check:
        return 0

    data_path = Path(os.environ.get("GF_PATHS_DATA", "/var/lib/grafana"))
    if data_path.is_dir() and not os.access(data_path, os.W_OK):
        log.error("data path %s is not writable", data_path)
        return 1
    user = os.environ.get("GF_SECURITY_ADMIN_USER") or "admin"
    password = os.environ.get("GF_SECURITY_ADMIN_PASSWORD", "")
    if len(password) < 12 or password == user:  # the stack never runs with Grafana's admin/admin
        print("grafana-standin: error: GF_SECURITY_ADMIN_PASSWORD is unset or weak", file=sys.stderr)
        return 2

    users = Users(
        data_path / "standin-users.json" if data_path.is_dir() else None,
        os.environ.get("GF_USERS_AUTO_ASSIGN_ORG_ROLE") or "Viewer",
    )
    server = ThreadingHTTPServer((args.host, args.port), make_handler(state, user, password, users))
    server.daemon_threads = True

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("HTTP server listening on %s:%d", args.host, args.port)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
