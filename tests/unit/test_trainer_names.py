"""What a participant reads: candidates by full names (short names still accepted), the estimator's
class, and links that open in a browser (MLFLOW_PUBLIC_URL), not at http://mlflow:5000."""

from __future__ import annotations

import importlib

import pytest

from trainer.__main__ import parse_args
from trainer.config import Settings
from trainer.register import logged_model_id
from trainer.train import CANDIDATES, SHORT_NAMES, Options, build_candidate, estimator_class


def test_candidates_have_full_names_and_their_estimator_class() -> None:
    assert CANDIDATES == ("linear-regression", "random-forest", "gradient-boosting")
    for name in CANDIDATES:
        estimator, params = build_candidate(name, seed=1)
        assert params["model"] == name
        # The logged class is the public import path, and it names the estimator actually built.
        module, _, cls = str(params["estimator_class"]).rpartition(".")
        assert getattr(importlib.import_module(module), cls) is type(estimator)
        assert estimator_class(name) == params["estimator_class"]
    assert estimator_class("random-forest") == "sklearn.ensemble.RandomForestRegressor"
    assert estimator_class("linear-regression") == "sklearn.linear_model.LinearRegression"


@pytest.mark.parametrize(("short", "full"), list(SHORT_NAMES.items()))
def test_short_names_still_work(short: str, full: str) -> None:
    assert build_candidate(short, seed=1)[1]["model"] == full
    assert Options(models=(short, full)).models == (full,)


def test_the_cli_takes_short_and_full_names_and_refuses_others(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["--models", "rf"]).models == ("random-forest",)  # make train ARGS="--models rf"
    assert parse_args(["--models", "lr, gradient-boosting"]).models == (
        "linear-regression",
        "gradient-boosting",
    )
    assert parse_args([]).models == CANDIDATES
    with pytest.raises(SystemExit):
        parse_args(["--models", "svm"])
    assert (
        "unknown model 'svm': choose from linear-regression (lr), random-forest (rf)"
        in capsys.readouterr().err
    )


def test_links_use_the_public_url() -> None:
    inside = Settings.from_env(
        dict(MLFLOW_TRACKING_URI="http://mlflow:5000", MLFLOW_PUBLIC_URL="http://localhost:5000/")
    )
    assert (
        inside.run_link("3", "abc")
        == "http://localhost:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
    assert (
        inside.experiment_link("3")
        == "http://localhost:5000/#/experiments/3/runs?workflowType=machine_learning"
    )
    direct = Settings.from_env(dict(MLFLOW_TRACKING_URI="http://127.0.0.1:5000", MLFLOW_PUBLIC_URL=""))
    # default: the tracking URI
    assert (
        direct.experiment_link("1")
        == "http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning"
    )
    local_store = Settings.from_env(dict(MLFLOW_TRACKING_URI="sqlite:///mlflow.db"))
    assert local_store.run_link("1", "abc") is None  # no UI to link to


def test_logged_model_ids_come_from_the_models_uri() -> None:
    assert logged_model_id("models:/m-0123abc") == "m-0123abc"
    for uri in ("runs:/abc/model", "models:/latency-predictor/3", "models:/"):
        with pytest.raises(ValueError):
            logged_model_id(uri)
