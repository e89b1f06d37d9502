"""The links the platform gives participants open the UI's model-training view, and the session run's
description lists each target's candidates with their test metrics."""

from __future__ import annotations

import json
import urllib.parse

from contracts import experiments
from trainer.config import Settings
from trainer.train import Candidate, session_description

UI = "http://localhost:5000"


def _query(url: str) -> dict[str, str]:
    fragment = urllib.parse.urlsplit(url).fragment
    return dict(urllib.parse.parse_qsl(fragment.partition("?")[2]))


def test_every_experiment_link_opens_the_model_training_view() -> None:
    for url in (
        experiments.experiment_url(UI, "3"),
        experiments.run_url(UI, "3", "abc"),
        experiments.candidates_url(UI, "3", "parent"),
    ):
        assert _query(url)["workflowType"] == "machine_learning", url
    assert experiments.TRAINING_EXPERIMENT_TAGS == {"mlflow.experimentKind": "custom_model_development"}


def test_the_candidates_link_filters_on_the_session_and_sorts_by_test_rmse() -> None:
    query = _query(experiments.candidates_url(UI, "3", "p1"))
    assert query["searchFilter"] == "tags.mlflow.parentRunId = 'p1'"
    assert (query["orderByKey"], query["orderByAsc"]) == ("metrics.`test_rmse`", "true")


def test_the_compare_link_names_the_runs_and_the_experiment() -> None:
    url = experiments.compare_url(UI, "3", ["a", "b"])
    assert url.startswith(f"{UI}/#/compare-runs?")
    query = _query(url)
    assert json.loads(query["runs"]) == ["a", "b"] and json.loads(query["experiments"]) == ["3"]


def _candidate(run_id: str, val_rmse: float) -> Candidate:
    metrics = {"val_rmse": val_rmse, "test_mae": 1.0, "test_rmse": val_rmse, "test_r2": 0.5}
    return Candidate(run_id, f"runs:/{run_id}/model", metrics, None)  # type: ignore[arg-type]


def test_the_session_description_ranks_candidates_with_links() -> None:
    scores = {
        "latency_ms": {"linear-regression": _candidate("lr1", 9.0), "random-forest": _candidate("rf1", 3.0)}
    }
    text = session_description(Settings.from_env(dict(MLFLOW_TRACKING_URI=UI)), "3", "p1", scores)
    assert experiments.candidates_url(UI, "3", "p1") in text
    assert experiments.compare_url(UI, "3", ["rf1", "lr1"]) in text  # best validation RMSE first
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert rows[0].startswith("| [random-forest](") and rows[0].endswith("| 1.0000 | 3.0000 | 0.5000 |")
    assert "| candidate | test MAE | test RMSE | test R2 |" in text


def test_without_a_ui_the_description_has_no_links() -> None:
    scores = {"latency_ms": {"linear-regression": _candidate("lr1", 9.0)}}
    text = session_description(
        Settings.from_env(dict(MLFLOW_TRACKING_URI="sqlite:///x.db")), "3", "p1", scores
    )
    assert "](" not in text and "| linear-regression | 1.0000 | 9.0000 | 0.5000 |" in text
