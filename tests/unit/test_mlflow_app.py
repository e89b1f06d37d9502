"""The tracking server's app (services/mlflow/app.py): what it assumes of MLflow's UI bundle, checked
against the installed MLflow, so that a release that renames a key fails here, naming it."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import mlflow.server
import pytest

from contracts import experiments
from services.access import SERVICE_ACCOUNTS
from services.mlflow import app as platform_app
from tests.conftest import ROOT

STATIC = Path(mlflow.server.__file__).parent / "js" / "build"


def bundle() -> str:
    found = sorted((STATIC / "static" / "js").glob("main.*.js"))
    assert len(found) == 1, f"expected one main.*.js in MLflow's UI build, found {found}"
    return found[0].read_text()


def chunks() -> str:
    """Every lazily loaded chunk of the UI (the experiment page lives in them), concatenated."""
    return "\n".join(path.read_text() for path in sorted((STATIC / "static" / "js").glob("*.chunk.js")))


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
    assert "Storage.prototype.getItem" in script.text and "test_rmse" in script.text
    assert '"\\"machine_learning\\""' in script.text  # JSON inside JSON: what the UI parses back
    assert "localStorage.getItem(key) === null" in script.text  # a browser's own choice is kept
    assert is_unprotected_route(platform_app.SCRIPT_ROUTE)


def test_the_app_is_registered_under_the_name_the_server_is_started_with() -> None:
    apps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["mlflow.app"]
    assert apps == {platform_app.APP_NAME: "services.mlflow.app:create_app"}
    assert f"--app-name {platform_app.APP_NAME}" in (ROOT / "services" / "mlflow" / "start.sh").read_text()


# --- the runs table of an experiment a browser has not opened (RUNS_TABLE) ----------------------


def test_the_experiment_page_keeps_its_state_under_the_key_the_script_answers() -> None:
    """MLflow's local storage wrapper (module 11475): `MLflowLocalStorage-<version>-<scope>-<key>`,
    version 1.1, the experiment page's scope `ExperimentPage-<JSON of its sorted ids>`."""
    prefix, suffix = platform_app.RUNS_TABLE_KEY
    text = bundle()
    assert '["MLflowLocalStorage",r.version,this.scope,e].join("-")' in text, (
        "MLflow's UI no longer names component state `MLflowLocalStorage-<version>-<scope>-<key>`: "
        "RUNS_TABLE_KEY in services/mlflow/app.py"
    )
    version = re.search(r'\}r\.version="([\d.]+)";class', text)
    assert version and prefix == f"MLflowLocalStorage-{version.group(1)}-ExperimentPage-", (
        f"MLflow's UI component state version is {version and version.group(1)}, not the one in "
        f"RUNS_TABLE_KEY {prefix!r} (services/mlflow/app.py)"
    )
    assert f'reactComponentStateKey="{suffix.lstrip("-")}"' in text, f"the state key is no longer {suffix!r}"
    assert re.search(r'getStoreForComponent\("ExperimentPage",\w+\)\.loadComponentState\(\)', chunks()), (
        "MLflow's experiment page no longer loads its state from scope ExperimentPage: RUNS_TABLE_KEY"
    )
    assert "JSON.stringify(e.sort())" in chunks(), "the experiment page's scope is no longer its sorted ids"


def test_the_experiment_page_reads_columns_and_sort_from_that_state() -> None:
    """The UI-state keys it keeps (module 1395, `selectedColumns` and its default), the sort it
    takes from storage when the URL has none (chunks 3793 and 3878), and the column ids."""
    text, lazy = bundle(), chunks()
    assert 'const a=["selectedColumns","columnOrder"' in text, (
        "MLflow's experiment page no longer keeps `selectedColumns` in its stored state: RUNS_TABLE"
    )
    default = "l=()=>[" + ",".join(
        f"(0,o.GF)(r.RO.ATTRIBUTES,r.qo.{c})" for c in ("SOURCE", "MODELS", "DATASET")
    )
    assert default in text, "the runs table's default columns changed: check RUNS_TABLE's"
    assert 'SOURCE:"Source",VERSION:"Version",MODELS:"Models",DATASET:"Dataset"' in text
    assert "GF:()=>I" in text and 'I=(e,t)=>e+".`"+t+"`"' in text, (
        "column ids are no longer `<type>.`<name>``"
    )
    assert 'METRICS:"metrics"' in text
    facets = re.search(r'const a=\["searchFilter","orderByKey","orderByAsc"[^\]]*\],d="isPreview"', lazy)
    assert facets, "the experiment page no longer reads orderByKey/orderByAsc as search facets: RUNS_TABLE"
    assert "selectedColumns" not in facets.group(0), "columns are URL parameters now: use them instead"
    stored_sort = r"pick\)\(\{\.\.\.\(0,\w+\.G\)\(\),\.\.\.e\},\$?\w+\.sO\);o\(t,\{replace:!0\}\)"
    assert re.search(stored_sort, lazy), (
        "the experiment page no longer takes its sort from stored state when the URL has none: RUNS_TABLE"
    )
    assert re.search(r"=>!\w+&&!\w+\|\|\w+===\w+\.T8\.DATE", lazy), (
        "runs no longer stop nesting under their parent when sorted by a metric: RUNS_TABLE's sort"
    )
    assert 'DATE:"attributes.start_time"' in text


def test_the_runs_table_state_names_the_key_metrics() -> None:
    state = platform_app.RUNS_TABLE
    assert state["selectedColumns"] == [
        "attributes.`Models`",
        *(f"metrics.`{m}`" for m in experiments.KEY_METRICS),
    ]
    assert state["orderByKey"] == "metrics.`test_rmse`" and state["orderByAsc"] is True
    script = platform_app.defaults_script()
    assert json.dumps(json.dumps(state)) in script


# --- /metrics for the Prometheus account only -------------------------------------------------


def test_metrics_gets_a_validator_that_names_the_scraper() -> None:
    """MLflow's basic-auth: admins pass, others need a validator for (path, method); /metrics has
    none of MLflow's own (else the platform's would replace one), so fail-closed denies it."""
    from mlflow.server import auth

    assert ("/metrics", "GET") not in auth.BEFORE_REQUEST_VALIDATORS or (
        auth.BEFORE_REQUEST_VALIDATORS[("/metrics", "GET")] is platform_app.metrics_scraper_only
    ), "MLflow validates /metrics itself now: check services/mlflow/app.py before replacing it"
    source = Path(auth.__file__).read_text()
    assert "if sender_is_admin():" in source and "if validator := _find_validator(request):" in source
    assert "BEFORE_REQUEST_VALIDATORS.get((req.path, req.method))" in source
    platform_app.allow_metrics_scraper()
    assert auth.BEFORE_REQUEST_VALIDATORS[("/metrics", "GET")] is platform_app.metrics_scraper_only
    assert platform_app.METRICS_SCRAPER in {account.name for account in SERVICE_ACCOUNTS}
    scraper = next(a for a in SERVICE_ACCOUNTS if a.name == platform_app.METRICS_SCRAPER)
    assert not scraper.admin and scraper.grants == ()
