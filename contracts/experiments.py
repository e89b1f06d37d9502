"""The platform's experiments as the MLflow UI shows them: their kind, and the links participants open.

MLflow 3 records an experiment's kind in the experiment tag `mlflow.experimentKind` (its own UI sets
it with SetExperimentTag); every experiment the platform creates or trains in is tagged
`custom_model_development` here, through `TRAINING_EXPERIMENT_TAGS`: services/access when it
creates one over REST, the trainer and the orchestrator when they log into one.

What the tag does not do in MLflow 3.17.2 (checked in headless Chromium, docs/training.md): the
UI's first screen follows its GenAI / Model-training switch, a per-browser setting that starts on
GenAI and that the URL parameter `workflowType=machine_learning` overrides. So every link the
platform prints or writes carries that parameter (`ui_query`). Standard library only: the access
scripts run with the host's python3.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable

# The experiment the orchestrator records retrainings in; its trainer containers log the retrained
# production candidates there (services/orchestrator), so no participant may take its name (services/access).
RETRAINING_EXPERIMENT = "retraining"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
TRAINING_EXPERIMENT_TAGS = {EXPERIMENT_KIND_TAG: MODEL_TRAINING}
# The UI's view switch as a URL parameter (GenAI is its default).
WORKFLOW_PARAM = ("workflowType", "machine_learning")
# The metrics a participant compares candidates on (trainer/evaluate.py names them `<split>_<metric>`).
KEY_METRICS = ("test_mae", "test_rmse", "test_r2")
# The runs table ranks candidates by it, lowest first (the workshop guide's first activity).
RANKING_METRIC = "test_rmse"


def metric_key(name: str) -> str:
    """How the UI names a metric in its sort (`orderByKey`) and its runs-table columns."""
    return f"metrics.`{name}`"


def ui_query(**params: str) -> str:
    """`?workflowType=machine_learning&...`: the query every platform link to the UI carries."""
    return "?" + urllib.parse.urlencode(dict([WORKFLOW_PARAM], **params))


def home_url(ui_url: str) -> str:
    """The UI's experiment list in the model-training view: the MLflow link `make up` prints."""
    return f"{ui_url}/#/experiments{ui_query()}"


def experiment_url(ui_url: str, experiment_id: str) -> str:
    """The experiment's runs in the model-training view."""
    return f"{ui_url}/#/experiments/{experiment_id}/runs{ui_query()}"


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_url}/#/experiments/{experiment_id}/runs/{run_id}{ui_query()}"


def candidates_url(ui_url: str, experiment_id: str, parent_run_id: str) -> str:
    """The runs table filtered to one session's candidate runs, best test RMSE first."""
    query = ui_query(
        searchFilter=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        orderByKey=metric_key(RANKING_METRIC),
        orderByAsc="true",
    )
    return f"{ui_url}/#/experiments/{experiment_id}/runs{query}"


def compare_url(ui_url: str, experiment_id: str, run_ids: Iterable[str]) -> str:
    """MLflow's compare page for the runs: every metric, side by side."""
    query = urllib.parse.urlencode(
        {"runs": json.dumps(list(run_ids)), "experiments": json.dumps([experiment_id])}
    )
    return f"{ui_url}/#/compare-runs?{query}"
