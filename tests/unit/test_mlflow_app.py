"""The tracking server's app (services/mlflow/app.py): what it assumes of MLflow's UI bundle, checked
against the installed MLflow, so that a release that renames a key fails here, naming it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import mlflow.server
import pytest

from services.mlflow import app as platform_app
from tests.conftest import ROOT

STATIC = Path(mlflow.server.__file__).parent / "js" / "build"


def bundle() -> str:
    found = sorted((STATIC / "static" / "js").glob("main.*.js"))
    assert len(found) == 1, f"expected one main.*.js in MLflow's UI build, found {found}"
    return found[0].read_text()


@pytest.mark.parametrize("stored_key", sorted(platform_app.UI_DEFAULTS))
def test_mlflow_ui_keys_are_the_ones_the_bundle_reads(stored_key: str) -> None:
    key, version = re.fullmatch(r"(.+)_v(\d+)", stored_key).groups()  # type: ignore[union-attr]
    assert f'key:"{key}",version:{version}' in bundle(), (
        f"MLflow's UI no longer reads local storage key {key!r} version {version} "
        f"(stored as {stored_key!r}): read its bundle again and update services/mlflow/app.py"
    )


def test_mlflow_ui_stores_versioned_json() -> None:
    """The versioned storage helper: `${key}_v${version}`, the value JSON.stringify'd."""
    text = bundle()
    assert re.search(r"\(\w+,\w+\)=>`\$\{\w+\}_v\$\{\w+\}`", text), (
        "MLflow's UI storage helper no longer names keys `${key}_v${version}`: services/mlflow/app.py"
    )
    assert re.search(r"JSON\.stringify\(\w+\);try\{localStorage\.setItem\(\w+,\w+\)", text), (
        "MLflow's UI storage helper no longer stores JSON: services/mlflow/app.py"
    )


def test_mlflow_ui_workflow_values_and_url_parameter() -> None:
    text = bundle()
    assert 'GENAI="genai",e.MACHINE_LEARNING="machine_learning"' in text, "the view switch's values changed"
    assert 'key:"mlflow.workflowType",version:1,initialValue:' in text
    assert 'get("workflowType")' in text, "the URL parameter workflowType is no longer read"
    assert platform_app.UI_DEFAULTS["mlflow.workflowType_v1"] == "machine_learning"


def test_the_index_loads_the_defaults_before_mlflows_bundle() -> None:
    index = platform_app.index_with_defaults((STATIC / "index.html").read_text())
    ours = index.index('<script src="static-files/platform/ui-defaults.js"></script>')
    assert ours < index.index(platform_app.BUNDLE_TAG)
    assert index.count("<script") == 2  # ours (blocking) and MLflow's (deferred): ours runs first
    with pytest.raises(RuntimeError, match="index.html has no"):
        platform_app.index_with_defaults("<html><script src=main.js></script></html>")


def test_the_server_answers_the_index_and_the_script_without_a_login() -> None:
    """MLflow's Flask app: `/` is its `serve` endpoint (replaced), and the script's route sits under
    /static, which basic-auth serves without a login (mlflow.server.auth.is_unprotected_route)."""
    from mlflow.server.auth import is_unprotected_route

    flask_app = mlflow.server.app
    assert [r.endpoint for r in flask_app.url_map.iter_rules() if r.rule == "/"] == ["serve"]
    platform_app.install_ui_defaults(flask_app)
    client = flask_app.test_client()
    page = client.get("/", headers={"Host": "localhost"})
    assert page.status_code == 200 and "static-files/platform/ui-defaults.js" in page.text
    script = client.get(platform_app.SCRIPT_ROUTE, headers={"Host": "localhost"})
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    for key in platform_app.UI_DEFAULTS:
        assert key in script.text
    assert '"\\"machine_learning\\""' in script.text  # JSON inside JSON: what the UI parses back
    assert "localStorage.getItem(key) === null" in script.text  # a browser's own choice is kept
    assert is_unprotected_route(platform_app.SCRIPT_ROUTE)


def test_the_app_is_registered_under_the_name_the_server_is_started_with() -> None:
    apps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["mlflow.app"]
    assert apps == {platform_app.APP_NAME: "services.mlflow.app:create_app"}
    assert f"--app-name {platform_app.APP_NAME}" in (ROOT / "services" / "mlflow" / "start.sh").read_text()
