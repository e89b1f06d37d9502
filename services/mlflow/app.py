"""The tracking server's app (`mlflow server --app-name platform`): MLflow's basic-auth app whose web
UI opens on model training in a browser that has never seen the platform.

Why: MLflow 3.17.2's UI does not choose its first screen from the experiment's kind tag
(contracts/experiments.py) but from a per-browser switch that starts on GenAI. A participant who
opens the printed URL and clicks their experiment saw a GenAI overview with a "Detect Issues"
pop-up and the MLflow Assistant panel over a quarter of the screen (issue 21).

What MLflow 3.17.2's UI reads, checked in its bundle, `mlflow/server/js/build/static/js/main.*.js`
(tests/unit/test_mlflow_app.py fails, naming the key, when a release changes any of this):
- the versioned storage helper (webpack module 51653) stores `useLocalStorage({key, version})` under
  `${key}_v${version}` as `JSON.stringify(value)` and parses it back with `JSON.parse`;
- the GenAI / Model-training switch: `{key:"mlflow.workflowType",version:1,initialValue:"genai"}`,
  values "genai" and "machine_learning"; the URL parameter `workflowType` overrides it for that page
  only (it is not written back to storage; which of the UI's own links carry it on was not
  checked: the stored default makes that moot);
- the Assistant opens itself once on a local server (hostname localhost, 127.0.0.1 or ::1, as the
  printed URL is) unless `{key:"mlflow.assistant.fab.autoOpenedOnFirstLoad",version:1}` is true;
  its panel then stays open through `mlflow.assistant.panelOpen` (version 1);
- the "Detect Issues" pop-up (GenAI's traces views) shows until
  `{key:"mlflow.detectIssues.guidanceShown",version:1}` is true;
- the runs table's view of an experiment (its columns and its sort), per experiment and browser:
  `getStoreForComponent("ExperimentPage", JSON.stringify(ids.sort()))` (module 11475) reads and
  writes `MLflowLocalStorage-1.1-ExperimentPage-["<id>"]-ReactComponentState` (`["MLflowLocalStorage",
  version "1.1", scope, "ReactComponentState"].join("-")`), a JSON object. Of it, the page takes
  the UI-state keys (module 1395: `selectedColumns` first, whose default is Source, Models and
  Dataset: no metric) and, when the URL has no search parameters of its own (as after a click in
  the experiments list), the sort (`orderByKey`, `orderByAsc`: chunk 3793's search facets, pushed
  into the URL by chunk 3878's page). Column ids are `metrics.`<name>`` (module 95051). Children
  nest under their parent run, collapsed, only while the table is sorted by start time (chunk
  3878: `!orderByKey && !searchFilter || orderByKey === "attributes.start_time"`): sorted by a
  metric, every candidate is a row of its own.
What was not used, and why: no URL parameter names columns (the page reads only searchFilter,
orderByKey, orderByAsc, startTime, lifecycleFilter, modelVersionFilter, datasetsFilter and
compareRunsMode; sorting by URL does not add the column); saved views (experiment tag
`mlflow.sharedViewState.<id>`, URL `viewStateShareKey`) apply only to links that carry the key, not
to a click in the experiments list, and stop the page from keeping the person's own changes; the
first-visit seeding (chunk 3878) only expands evaluation runs; the experiment tag
`mlflow.experiment.primaryMetric.name` chooses charts, not columns. A click in the experiments list
loads no page and carries no parameter, and the key is per experiment id, which a static script
cannot know: so the script answers the UI's own read of that key, where the browser has no state
for the experiment yet, with the platform's runs-table view (`RUNS_TABLE`): the key test metrics as
columns, best test RMSE first. The UI saves its state under the real key at once; from then on the
browser's own state (what the person sorts or picks) is what it reads.
Basic-auth has no login page to redirect from: the browser's own prompt keeps the URL, parameter
included.

So the index page loads one same-origin script before MLflow's own (deferred) bundle; it writes
these keys only where the browser has none, so a person who switches the view keeps their choice,
and gives the runs-table view only for an experiment the browser has no state for.

The app also lets the Prometheus service account scrape `/metrics`, and nothing else it is not
granted (issue 20): MLflow's basic-auth admits admins everywhere and other users only where a
validator in BEFORE_REQUEST_VALIDATORS for (path, method) says so; with MLFLOW_BASIC_AUTH_FAIL_CLOSED
(the default) a route without one, such as `/metrics` (`--expose-prometheus`), is denied. So
`create_app` registers one for ("/metrics", "GET") that admits exactly that account, by user name
(the login was checked before validators run), and the account is a plain user (services/access).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Flask, Response

from contracts import experiments
from contracts.accounts import METRICS_SCRAPER

# `mlflow server --app-name APP_NAME`: pyproject.toml's `mlflow.app` entry point names create_app.
APP_NAME = "platform"
# Local storage as MLflow's versioned helper names and encodes it: `<key>_v<version>` -> JSON.
UI_DEFAULTS: dict[str, Any] = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
    "mlflow.detectIssues.guidanceShown_v1": True,
}
# The runs table of an experiment a browser has not opened yet: the run's models and the key test
# metrics as columns, best test RMSE first, every candidate a row. Of MLflow's default columns
# only Models stays: with Source and Dataset too, the metrics start right of a 1400-pixel screen.
RUNS_TABLE: dict[str, Any] = {
    "selectedColumns": [
        "attributes.`Models`",
        *(experiments.metric_key(name) for name in experiments.KEY_METRICS),
    ],
    "orderByKey": experiments.metric_key(experiments.RANKING_METRIC),
    "orderByAsc": True,
}
# How MLflow's UI names that state in local storage: `<prefix>["<id>", ...]<suffix>`.
RUNS_TABLE_KEY = ("MLflowLocalStorage-1.1-ExperimentPage-", "-ReactComponentState")
# Under /static: MLflow's basic-auth serves that prefix without a login (as it does its own bundle),
# so the script loads before the browser has asked for one. It holds nothing secret.
SCRIPT_ROUTE = "/static-files/platform/ui-defaults.js"
# MLflow's index.html loads its bundle with a relative `static-files/...` src; ours goes first.
BUNDLE_TAG = '<script defer="defer" src="static-files/static/js/'


def defaults_script() -> str:
    """The script: each key set to its JSON form unless the browser already has it; an experiment's
    runs-table state, where the browser has none, read as `RUNS_TABLE`."""
    encoded = {key: json.dumps(value) for key, value in UI_DEFAULTS.items()}
    return (
        "// The platform's first-visit defaults for MLflow's UI (services/mlflow/app.py).\n"
        "(function () {\n"
        f"  var defaults = {json.dumps(encoded, indent=2)};\n"
        "  try {\n"
        "    Object.keys(defaults).forEach(function (key) {\n"
        "      if (window.localStorage.getItem(key) === null) {\n"
        "        window.localStorage.setItem(key, defaults[key]);\n"
        "      }\n"
        "    });\n"
        "  } catch (e) {}  // storage disabled: the UI falls back to its own defaults\n"
        "  // An experiment's runs table, read when the page opens it: the platform's view until\n"
        "  // the browser has its own (the UI then saves it under the same key).\n"
        f"  var prefix = {json.dumps(RUNS_TABLE_KEY[0])}, suffix = {json.dumps(RUNS_TABLE_KEY[1])};\n"
        f"  var runsTable = {json.dumps(json.dumps(RUNS_TABLE))};\n"
        "  var getItem = Storage.prototype.getItem;\n"
        "  Storage.prototype.getItem = function (key) {\n"
        "    var value = getItem.call(this, key);\n"
        "    if (value === null && typeof key === 'string' && key.indexOf(prefix) === 0 &&\n"
        "        key.slice(-suffix.length) === suffix && this === window.localStorage) {\n"
        "      return runsTable;\n"
        "    }\n"
        "    return value;\n"
        "  };\n"
        "})();\n"
    )


def index_with_defaults(index_html: str) -> str:
    """MLflow's index page with the defaults script placed before its bundle."""
    if BUNDLE_TAG not in index_html:
        raise RuntimeError(
            f"MLflow's index.html has no {BUNDLE_TAG!r}: the UI defaults cannot be placed"
            " (services/mlflow/app.py)"
        )
    tag = f'<script src="{SCRIPT_ROUTE.lstrip("/")}"></script>'
    return index_html.replace(BUNDLE_TAG, tag + BUNDLE_TAG, 1)


def install_ui_defaults(flask_app: Flask) -> None:
    """Serve the index page (MLflow's `serve` endpoint, the rule `/`) with the script, and the script."""
    assert flask_app.static_folder, "MLflow's Flask app has no static folder"
    index = index_with_defaults((Path(flask_app.static_folder) / "index.html").read_text())
    script = defaults_script()

    def serve_index() -> Response:
        return Response(index, mimetype="text/html", headers={"Cache-Control": "no-cache"})

    def serve_script() -> Response:
        return Response(script, mimetype="text/javascript", headers={"Cache-Control": "no-cache"})

    flask_app.view_functions["serve"] = serve_index
    flask_app.add_url_rule(SCRIPT_ROUTE, "platform_ui_defaults", serve_script)


def metrics_scraper_only() -> bool:
    """The validator of GET /metrics: the Prometheus account, nobody else (admins never get here)."""
    from mlflow.server.auth import authenticate_request
    from werkzeug.datastructures import Authorization

    login = authenticate_request()  # checked already: validators run after the login
    return isinstance(login, Authorization) and login.username == METRICS_SCRAPER


def allow_metrics_scraper() -> None:
    """Register `metrics_scraper_only` for GET /metrics with MLflow's basic-auth."""
    from mlflow.server.auth import BEFORE_REQUEST_VALIDATORS

    BEFORE_REQUEST_VALIDATORS[("/metrics", "GET")] = metrics_scraper_only


def create_app() -> Any:
    """The `platform` app (pyproject.toml's `mlflow.app` entry point): the UI defaults and the
    Prometheus account's /metrics, then MLflow's basic-auth app (which returns its FastAPI app
    under uvicorn)."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as create_basic_auth_app

    install_ui_defaults(flask_app)
    allow_metrics_scraper()
    return create_basic_auth_app(flask_app)
