"""Promotion happens only when there is no production model or the candidate is strictly better."""

from __future__ import annotations

from trainer.register import decide


def test_first_model_is_promoted() -> None:
    decision = decide(3.0, None)
    assert decision.promote and decision.production_rmse is None
    assert "no production version" in decision.reason


def test_better_candidate_is_promoted_with_both_scores_in_the_reason() -> None:
    decision = decide(2.5, 3.0, "4")
    assert decision.promote
    assert "2.5000" in decision.reason and "3.0000" in decision.reason and "v4" in decision.reason


def test_equal_or_worse_candidate_is_not_promoted() -> None:
    assert not decide(3.0, 3.0, "2").promote
    assert not decide(3.1, 3.0, "2").promote
