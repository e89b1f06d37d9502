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
- not set here: the runs table's columns. Its defaults are Source, Models and Dataset (no metric),
  kept per experiment under `MLflowLocalStorage-1.1-ExperimentPage-["<id>"]-ReactComponentState`;
  sorting by a metric adds its column (the workshop guide says so).
Basic-auth has no login page to redirect from: the browser's own prompt keeps the URL, parameter
included.

So the index page loads one same-origin script before MLflow's own (deferred) bundle; it writes
these keys only where the browser has none, so a person who switches the view keeps their choice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Flask, Response

# `mlflow server --app-name APP_NAME`: pyproject.toml's `mlflow.app` entry point names create_app.
APP_NAME = "platform"
# Local storage as MLflow's versioned helper names and encodes it: `<key>_v<version>` -> JSON.
UI_DEFAULTS: dict[str, Any] = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
    "mlflow.detectIssues.guidanceShown_v1": True,
}
# Under /static: MLflow's basic-auth serves that prefix without a login (as it does its own bundle),
# so the script loads before the browser has asked for one. It holds nothing secret.
SCRIPT_ROUTE = "/static-files/platform/ui-defaults.js"
# MLflow's index.html loads its bundle with a relative `static-files/...` src; ours goes first.
BUNDLE_TAG = '<script defer="defer" src="static-files/static/js/'


def defaults_script() -> str:
    """The script: each key set to its JSON form unless the browser already has it."""
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


def create_app() -> Any:
    """The `platform` app (pyproject.toml's `mlflow.app` entry point): the UI defaults, then
    MLflow's basic-auth app (which returns its FastAPI app under uvicorn)."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as create_basic_auth_app

    install_ui_defaults(flask_app)
    return create_basic_auth_app(flask_app)
