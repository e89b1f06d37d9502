"""The promotion gate's rules (trainer/gate.py), on scores as `mlflow.models.evaluate` reports them."""

from __future__ import annotations

import json

import pytest

from trainer.gate import RMSE, ROWS, Thresholds, decide


def scores(test: float, window: float | None = None, rows: int = 500) -> dict[str, dict[str, float]]:
    out = {"test": {RMSE: test, ROWS: 3000.0}}
    if window is not None:
        out["window"] = {RMSE: window, ROWS: float(rows)}
    return out


def test_promotes_when_there_is_no_production_version() -> None:
    decision = decide(scores(3.0), None)
    assert decision.promote and decision.reason == "no production version yet"
    assert decision.tags()["promotion.production_test_rmse"] == ""


def test_without_a_window_the_test_rmse_must_be_strictly_lower() -> None:
    """A manual `make train`: the platform's original rule is a case of the one gate."""
    assert decide(scores(2.5), scores(3.0), "4").promote
    tied = decide(scores(3.0), scores(3.0), "2")
    assert not tied.promote and "not better" in tied.reason
    assert not decide(scores(3.1), scores(3.0), "2").promote


def test_a_minimum_relative_improvement_applies() -> None:
    thresholds = Thresholds(min_relative_improvement=0.1)
    assert not decide(scores(2.8), scores(3.0), "1", thresholds).promote  # 6.7 % better
    assert decide(scores(2.6), scores(3.0), "1", thresholds).promote  # 13 % better


def test_with_a_window_the_window_decides_and_the_test_set_limits_regression() -> None:
    thresholds = Thresholds(max_test_regression=0.05)
    # Better on recent production data, slightly worse on the fixed test set (+3 %): promoted.
    decision = decide(scores(3.09, window=8.0), scores(3.0, window=12.0), "3", thresholds, trigger="drift")
    assert decision.promote, decision.reason
    tags = decision.tags()
    assert tags["promotion.trigger"] == "drift" and tags["promotion.window_rows"] == "500"
    assert float(tags["promotion.candidate_window_rmse"]) == 8.0
    assert float(tags["promotion.production_window_rmse"]) == 12.0
    assert json.loads(tags["promotion.thresholds"])["max_test_regression"] == 0.05
    # Better on the window but 10 % worse on the test set: kept.
    worse = decide(scores(3.3, window=8.0), scores(3.0, window=12.0), "3", thresholds)
    assert not worse.promote and "test" in worse.reason
    # Worse on the window: kept, whatever the test set says.
    assert not decide(scores(2.0, window=13.0), scores(3.0, window=12.0), "3", thresholds).promote


def test_a_window_too_small_to_judge_keeps_production() -> None:
    decision = decide(
        scores(2.0, window=1.0, rows=20), scores(3.0, window=12.0), "3", Thresholds(min_labelled_rows=100)
    )
    assert not decision.promote
    assert "20 labelled rows, fewer than the 100" in decision.reason


@pytest.mark.parametrize(
    "kwargs", [{"min_relative_improvement": 1.0}, {"min_labelled_rows": 0}, {"max_test_regression": -0.1}]
)
def test_thresholds_refuse_useless_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Thresholds(**kwargs)  # type: ignore[arg-type]
