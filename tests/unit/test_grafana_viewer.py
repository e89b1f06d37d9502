"""Grafana's read-only login (services/access/grafana.py), against the offline Grafana stand-in on
loopback, which answers like Grafana's API: the job creates the viewer once and re-applies its
password and role at every start; the viewer reads dashboards and cannot save one (403) or manage
users. `make e2e` repeats the viewer checks on the stack (tests/stack/test_team_access.py)."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from services.access import AccessError
from services.access.__main__ import main as access_main
from services.access.grafana import GrafanaApi, ensure_viewer
from tests.conftest import ROOT

ADMIN = ("admin", "admin-password-123456")
VIEWER = ("viewer", "viewer-password-123456")


def load_standin() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "grafana_standin", ROOT / "infra/offline/grafana/standin.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def grafana(tmp_path: Path) -> Iterator[str]:
    """The stand-in serving the repository's provisioning on 127.0.0.1 (users kept in tmp_path)."""
    standin = load_standin()
    state = standin.load_provisioning(
        ROOT / "grafana/provisioning", {"/etc/grafana/dashboards": str(ROOT / "grafana/dashboards")}
    )
    users = standin.Users(tmp_path / "standin-users.json")
    server = standin.ThreadingHTTPServer(("127.0.0.1", 0), standin.make_handler(state, *ADMIN, users))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call(url: str, login: tuple[str, str], method: str = "GET", body: Any = None) -> tuple[int, Any]:
    token = base64.b64encode(":".join(login).encode()).decode()
    request = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # nosec B310 (loopback test server)
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_the_viewer_reads_dashboards_and_cannot_save_them(grafana: str) -> None:
    api = GrafanaApi(grafana, *ADMIN)
    assert ensure_viewer(api, *VIEWER) == "Grafana viewer 'viewer': created, role Viewer"
    status, hits = call(f"{grafana}/api/search", VIEWER)
    assert status == 200 and hits, hits
    status, found = call(f"{grafana}/api/dashboards/uid/{hits[0]['uid']}", VIEWER)
    assert status == 200 and found["meta"]["canSave"] is False
    saved = call(f"{grafana}/api/dashboards/db", VIEWER, "POST", {"dashboard": found["dashboard"]})
    assert saved[0] == 403
    # No user administration, no datasource settings, no wrong password.
    assert call(f"{grafana}/api/admin/users", VIEWER, "POST", {"login": "x", "password": "y" * 12})[0] == 403
    assert call(f"{grafana}/api/datasources", VIEWER)[0] == 403
    assert call(f"{grafana}/api/search", (VIEWER[0], "wrong-password-123"))[0] == 401


def test_the_job_is_idempotent_and_restores_password_and_role(grafana: str) -> None:
    api = GrafanaApi(grafana, *ADMIN)
    ensure_viewer(api, "viewer", "first-password-123456")
    user_id = api.user_id("viewer")
    assert call(f"{grafana}/api/org/users/{user_id}", ADMIN, "PATCH", {"role": "Editor"})[0] == 200
    assert (
        ensure_viewer(api, *VIEWER) == "Grafana viewer 'viewer': exists; password set from .env, role Viewer"
    )
    assert api.user_id("viewer") == user_id
    assert call(f"{grafana}/api/search", ("viewer", "first-password-123456"))[0] == 401
    status, found = call(
        f"{grafana}/api/dashboards/uid/{call(f'{grafana}/api/search', VIEWER)[1][0]['uid']}", VIEWER
    )
    assert status == 200 and found["meta"]["canSave"] is False


def test_a_wrong_admin_password_is_one_clear_error(grafana: str) -> None:
    with pytest.raises(AccessError, match="refused the admin login"):
        ensure_viewer(GrafanaApi(grafana, "admin", "not-the-password-1"), *VIEWER)


def test_the_cli_refuses_a_weak_viewer_password(
    grafana: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRAFANA_URL", grafana)
    monkeypatch.setenv("GRAFANA_ADMIN_PASSWORD", ADMIN[1])
    monkeypatch.setenv("GRAFANA_VIEWER_PASSWORD", "short")
    assert access_main(["grafana-viewer"]) == 1
    assert "GRAFANA_VIEWER_PASSWORD is weak" in capsys.readouterr().err
    monkeypatch.setenv("GRAFANA_VIEWER_PASSWORD", VIEWER[1])
    assert access_main(["grafana-viewer"]) == 0
    assert call(f"{grafana}/api/search", VIEWER)[0] == 200


def test_the_standin_reports_the_pinned_grafana_version(grafana: str) -> None:
    """/api/health says the version of the image docker-compose.yml pins, as Grafana would."""
    pinned = re.search(r"image: grafana/grafana:(\S+)", (ROOT / "docker-compose.yml").read_text())
    assert pinned, "docker-compose.yml pins no grafana/grafana image"
    status, health = call(f"{grafana}/api/health", ADMIN)
    assert status == 200 and health["version"] == pinned.group(1), health
