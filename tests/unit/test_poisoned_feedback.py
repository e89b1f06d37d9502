"""The poisoned-feedback gate test: feedback feeds both the retraining and the gate's window, so an
attacker who inflates their feedback labels a little more after every promotion they win gets a
candidate that looks better on the (poisoned) window and stays within GATE_MAX_TEST_REGRESSION of the
version before on the fixed test set, cycle after cycle. The champion rules alone let quality walk
down; the absolute bound on the fixed reference set (trainer/gate.py) stops the promotions instead.

Real scikit-learn models on real data of the synthetic world (contracts/synthetic.py), through the
gate's own `decide`; the scores are computed in process (the gate's `evaluate_model` would log them
to a tracking server: the same numbers)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import mean_squared_error
from sklearn.pipeline import Pipeline

from contracts import synthetic
from contracts.schema import FEATURE_NAMES
from trainer import data
from trainer.features import build_preprocessor
from trainer.gate import REFERENCE, RMSE, ROWS, TEST, WINDOW, Decision, Scores, Thresholds, decide

TARGET = "bandwidth_efficiency"
# The attacker's labels: the true value times (1 + STEP x the poison level); one level more after
# every promotion they win (a refused level is tried again on the next window).
STEP = 0.02
CYCLES = 8
# The orchestrator's defaults (docker-compose.yml): GATE_MIN_RELATIVE_IMPROVEMENT, GATE_MIN_LABELLED_ROWS,
# GATE_MAX_TEST_REGRESSION, GATE_MAX_REFERENCE_REGRESSION.
THRESHOLDS = Thresholds(0.02, 100, 0.10, 0.10)


@functools.cache
def _world() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The reference data's training rows and fixed test set (the trainer's seeded split), and the
    gate's reference set."""
    train, _, test = data.split(synthetic.generate(4000, seed=42), seed=42)
    return train, test, synthetic.reference_set()


@functools.cache
def _window(level: int, cycle: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A cycle's production window with feedback poisoned to `level`: (training rows, held-out rows)."""
    window = synthetic.generate(4000, seed=1000 + cycle)
    window[TARGET] = window[TARGET] * (1 + STEP * level)
    return window.iloc[:2800], window.iloc[2800:]


@functools.cache
def _model(level: int, cycle: int) -> Pipeline:
    """A random forest trained on the reference rows plus the cycle's poisoned window (level 0, cycle
    0: the first production version, reference rows only)."""
    train, _, _ = _world()
    rows = train if level == 0 else pd.concat([train, _window(level, cycle)[0]], ignore_index=True)
    forest = RandomForestRegressor(n_estimators=20, max_depth=8, min_samples_leaf=2, random_state=0, n_jobs=1)
    model = Pipeline([("preprocess", build_preprocessor()), ("model", forest)])
    return model.fit(rows[list(FEATURE_NAMES)], rows[TARGET])


def _rmse(model: Pipeline, frame: pd.DataFrame) -> float:
    return float(np.sqrt(mean_squared_error(frame[TARGET], model.predict(frame[list(FEATURE_NAMES)]))))


def _scores(model: Pipeline, frames: dict[str, pd.DataFrame]) -> Scores:
    return {name: {RMSE: _rmse(model, frame), ROWS: float(len(frame))} for name, frame in frames.items()}


@functools.cache
def _walk(reference_rule: bool) -> tuple[float, tuple[tuple[Decision, float], ...]]:
    """CYCLES retrain-and-gate cycles: the baseline (the first production version's reference RMSE),
    and each cycle's decision with production's reference RMSE after it."""
    _, test, reference = _world()
    production, level = _model(0, 0), 0
    baseline = _rmse(production, reference)  # recorded once, on the registered model
    history = []
    for cycle in range(1, CYCLES + 1):
        candidate = _model(level + 1, cycle)
        frames = {WINDOW: _window(level + 1, cycle)[1], TEST: test}
        if reference_rule:
            frames[REFERENCE] = reference
        decision = decide(
            _scores(candidate, frames),
            _scores(production, frames),
            str(cycle),
            THRESHOLDS,
            trigger="live_rmse_degraded",
            reference_baseline=baseline if reference_rule else None,
        )
        if decision.promote:
            production, level = candidate, level + 1
        history.append((decision, _rmse(production, reference)))
    return baseline, tuple(history)


def test_the_champion_rules_alone_let_poisoned_feedback_walk_quality_down() -> None:
    baseline, history = _walk(reference_rule=False)
    promoted = [decision for decision, _ in history if decision.promote]
    assert len(promoted) >= CYCLES // 2, [d.reason for d, _ in history]
    for decision in promoted:  # each step looked fine: better on the window, within 10 % on the test set
        test = decision.candidate[TEST][RMSE]
        assert test <= decision.champion[TEST][RMSE] * 1.10  # type: ignore[index]
        assert decision.candidate[WINDOW][RMSE] < decision.champion[WINDOW][RMSE]  # type: ignore[index]
    # ... and production ends far past where the reference bound would have stopped it.
    final = history[-1][1]
    assert final > baseline * (1 + THRESHOLDS.max_reference_regression) * 1.1, (final, baseline)


def test_the_reference_bound_stops_the_walk() -> None:
    baseline, history = _walk(reference_rule=True)
    bound = baseline * (1 + THRESHOLDS.max_reference_regression)
    decisions = [decision for decision, _ in history]
    # The gate still takes feedback-trained versions at first ...
    assert any(decision.promote for decision in decisions[:3]), [d.reason for d in decisions]
    # ... production never passes the bound, and the baseline never moves ...
    for decision, production_reference in history:
        assert production_reference <= bound, (production_reference, bound)
        assert decision.reference_baseline == baseline
    # ... and the promotions stop, refused by the reference rule (named in the reason and the tags).
    last = decisions[-3:]
    assert not any(decision.promote for decision in last), [d.reason for d in last]
    assert all("reference" in decision.refused_by for decision in last)
    assert all("over the reference bound" in decision.reason for decision in last)
    assert all("reference" in decision.tags()["promotion.refused_by"].split(",") for decision in last)
    # The old rule alone would have promoted the first candidate the reference rule refused.
    first_refused = next(i for i, d in enumerate(decisions) if d.refused_by == ("reference",))
    assert _walk(reference_rule=False)[1][first_refused][0].promote
