"""Model checks of the loss estimator (contracts/dle.py) as the trainer fits it: on a shift that
doubles a model's true RMSE the estimate rises by at least half as much; on a shift the model
handles well it stays within 15% of its reference. No label of the shifted rows is used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from contracts import dle, synthetic
from contracts.schema import FEATURE_NAMES
from trainer import data
from trainer.features import build_preprocessor
from trainer.train import build_candidate

SEED = 11


def fitted(target: str) -> tuple[Pipeline, dle.FittedEstimator]:
    """A small random forest and its loss estimator, fitted on the validation split as the trainer does."""
    train, val, _ = data.split(synthetic.generate(8000, seed=SEED), seed=SEED)
    forest, _ = build_candidate("random-forest", seed=SEED)
    forest.set_params(n_estimators=40)
    model = Pipeline([("preprocess", build_preprocessor()), ("model", forest)])
    model.fit(train[list(FEATURE_NAMES)], train[target])
    predicted = model.predict(val[list(FEATURE_NAMES)])
    x = dle.design_matrix(dle.frame_rows(val), predicted)
    return model, dle.fit(x, val[target].to_numpy(), predicted, seed=SEED)


def true_and_estimated(
    model: Pipeline, estimator: dle.FittedEstimator, frame: pd.DataFrame, target: str
) -> tuple[float, float]:
    predicted = model.predict(frame[list(FEATURE_NAMES)])
    true = float(np.sqrt(np.mean((frame[target].to_numpy() - predicted) ** 2)))
    return true, estimator.estimate(dle.design_matrix(dle.frame_rows(frame), predicted)).rmse


@pytest.fixture(scope="module")
def latency() -> tuple[Pipeline, dle.FittedEstimator]:
    return fitted("latency_ms")


def test_a_shift_that_doubles_the_true_rmse_raises_the_estimate_by_half_of_it(latency) -> None:  # type: ignore[no-untyped-def]
    model, estimator = latency
    true_ref, est_ref = true_and_estimated(model, estimator, synthetic.generate(3000, seed=5), "latency_ms")
    # Busier links, longer paths, more mobile and satellite clients (contracts/synthetic.py).
    true, est = true_and_estimated(
        model, estimator, synthetic.generate(3000, seed=5, drift=0.5), "latency_ms"
    )
    assert true >= 2 * true_ref, "the scenario must double the true RMSE"
    assert est - est_ref >= 0.5 * (true - true_ref), (
        f"estimate {est_ref:.2f} -> {est:.2f}, true {true_ref:.2f} -> {true:.2f}"
    )


def test_a_harmless_shift_leaves_the_estimate_within_15_percent() -> None:
    """The bandwidth-efficiency model under the same strong drift: its inputs move (PSI well over
    0.2 on several features), its true error does not. The estimate must not cry wolf."""
    model, estimator = fitted("bandwidth_efficiency")
    true_ref, est_ref = true_and_estimated(
        model, estimator, synthetic.generate(3000, seed=6), "bandwidth_efficiency"
    )
    true, est = true_and_estimated(
        model, estimator, synthetic.generate(3000, seed=6, drift=1.0), "bandwidth_efficiency"
    )
    assert abs(true - true_ref) <= 0.15 * true_ref, "the scenario must leave the true RMSE flat"
    assert abs(est - est_ref) <= 0.15 * est_ref, f"estimate {est_ref:.4f} -> {est:.4f}"
