"""Model checks: the candidates learn (clear margin over a mean predictor), trees win on the
non-linear target, and predictions move in the physically right direction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from contracts import synthetic
from contracts.schema import FEATURE_NAMES, TARGETS
from trainer import data
from trainer.evaluate import rmse
from trainer.features import build_preprocessor
from trainer.train import CANDIDATES, build_candidate


@pytest.fixture(scope="module")
def splits() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return data.split(synthetic.generate(6000, seed=11), seed=11)


@pytest.fixture(scope="module")
def fitted(splits) -> dict[tuple[str, str], Pipeline]:  # type: ignore[no-untyped-def]
    train = splits[0]
    models = {}
    for target in TARGETS:
        for key in CANDIDATES:
            estimator, _ = build_candidate(key, seed=11)
            model = Pipeline([("preprocess", build_preprocessor()), ("model", estimator)])
            models[(target, key)] = model.fit(train[list(FEATURE_NAMES)], train[target])
    return models


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("key", CANDIDATES)
def test_every_candidate_beats_the_mean_predictor_clearly(splits, fitted, target: str, key: str) -> None:  # type: ignore[no-untyped-def]
    train, _, test = splits
    baseline = rmse(test[target].to_numpy(), np.full(len(test), train[target].mean()))
    model_rmse = rmse(test[target].to_numpy(), fitted[(target, key)].predict(test[list(FEATURE_NAMES)]))
    assert model_rmse < 0.5 * baseline, f"{key} on {target}: {model_rmse:.4f} vs mean {baseline:.4f}"


def test_random_forest_beats_linear_regression_on_nonlinear_latency(splits, fitted) -> None:  # type: ignore[no-untyped-def]
    _, _, test = splits
    x, y = test[list(FEATURE_NAMES)], test["latency_ms"].to_numpy()
    rf, lr = (
        rmse(y, fitted[("latency_ms", "random-forest")].predict(x)),
        rmse(y, fitted[("latency_ms", "linear-regression")].predict(x)),
    )
    assert rf < 0.8 * lr, f"rf {rf:.3f} should clearly beat lr {lr:.3f}"


def test_latency_rises_with_distance_and_utilisation(splits, fitted) -> None:  # type: ignore[no-untyped-def]
    model = fitted[("latency_ms", "random-forest")]
    rows = splits[2][list(FEATURE_NAMES)].head(200).copy()
    far = rows.assign(distance_km=rows.distance_km * 4)
    busy = rows.assign(link_utilization=0.95)
    assert model.predict(far).mean() > model.predict(rows).mean()
    assert model.predict(busy).mean() > model.predict(rows).mean()
