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
    "kwargs",
    [
        {"min_relative_improvement": 1.0},
        {"min_labelled_rows": 0},
        {"max_test_regression": -0.1},
        {"max_reference_regression": -0.1},
    ],
)
def test_thresholds_refuse_useless_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Thresholds(**kwargs)  # type: ignore[arg-type]


def with_reference(values: dict[str, dict[str, float]], reference: float) -> dict[str, dict[str, float]]:
    return {**values, "reference": {RMSE: reference, ROWS: 3000.0}}


def test_the_reference_bound_is_absolute_from_the_recorded_baseline() -> None:
    thresholds = Thresholds(max_test_regression=0.10, max_reference_regression=0.10)
    champion = with_reference(scores(3.0, window=12.0), 3.2)
    # Better on the window, within 10 % of production on the test set and on the reference set,
    # but 11.7 % over the model's baseline of 3.0 (its first production version): kept.
    candidate = with_reference(scores(3.2, window=8.0), 3.35)
    kept = decide(candidate, champion, "7", thresholds, reference_baseline=3.0)
    assert not kept.promote and kept.refused_by == ("reference",)
    assert "over the reference bound: reference RMSE 3.3500 > 3.3000 (baseline 3.0000 + 10%)" in kept.reason
    tags = kept.tags()
    assert tags["promotion.refused_by"] == "reference" and tags["promotion.decision"] == "not_promoted"
    assert float(tags["promotion.reference_baseline_rmse"]) == 3.0
    assert float(tags["promotion.candidate_reference_rmse"]) == 3.35
    assert float(tags["promotion.production_reference_rmse"]) == 3.2
    # The same candidate against a baseline it is within: promoted, and the baseline is unchanged.
    passed = decide(candidate, champion, "7", thresholds, reference_baseline=3.1)
    assert passed.promote and passed.refused_by == () and passed.reference_baseline == 3.1
    assert passed.tags()["promotion.refused_by"] == ""


def test_both_rules_are_named_when_both_refuse() -> None:
    kept = decide(
        with_reference(scores(3.5), 4.0), with_reference(scores(3.0), 3.0), "2", reference_baseline=3.0
    )
    assert kept.refused_by == ("champion", "reference")
    assert "not better: test:" in kept.reason and "over the reference bound" in kept.reason


def test_the_baseline_is_the_first_production_versions_reference_rmse() -> None:
    """No production yet: the candidate's own reference RMSE becomes the baseline to record; a model
    from before the baseline existed: the champion's."""
    first = decide(with_reference(scores(3.0), 2.9), None)
    assert first.promote and first.reference_baseline == 2.9
    upgraded = decide(with_reference(scores(2.5), 2.7), with_reference(scores(3.0), 2.4), "4")
    assert upgraded.reference_baseline == 2.4
    assert not upgraded.promote and upgraded.refused_by == ("reference",)  # 2.7 > 2.4 * 1.1


def test_a_window_too_small_is_named_as_the_refusing_rule() -> None:
    decision = decide(scores(2.0, window=1.0, rows=20), scores(3.0, window=12.0), "3")
    assert decision.refused_by == ("window_rows",)
