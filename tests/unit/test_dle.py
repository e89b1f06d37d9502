"""The loss estimator (contracts/dle.py) on data whose loss is known by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contracts import dle, synthetic
from contracts.schema import FEATURE_NAMES

# The noise of the "actual" value around a perfect prediction: its standard deviation depends on the
# access network only, so each row's expected squared error (sigma^2) and absolute error
# (sigma * sqrt(2/pi)) are known exactly.
SIGMA = {"fiber": 1.0, "cable": 1.0, "dsl": 2.0, "5g": 2.0, "4g": 6.0, "satellite": 10.0}


def known_loss(
    n: int, seed: int, drift: float = 0.0
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Rows, predictions, actual values and each row's noise level."""
    frame = synthetic.generate(n, seed=seed, drift=drift)
    rng = np.random.default_rng(seed)
    predicted = frame["latency_ms"].to_numpy()
    sigma = frame["network_type"].map(SIGMA).to_numpy()
    return frame, predicted, predicted + rng.normal(0, sigma), sigma


@pytest.fixture(scope="module")
def fitted() -> dle.FittedEstimator:
    frame, predicted, actual, _ = known_loss(4000, seed=1)
    return dle.fit(dle.design_matrix(dle.frame_rows(frame), predicted), actual, predicted)


def test_the_estimate_matches_the_known_loss_on_rows_it_did_not_see(fitted: dle.FittedEstimator) -> None:
    frame, predicted, actual, sigma = known_loss(3000, seed=2)
    x = dle.design_matrix(dle.frame_rows(frame), predicted)

    figures = dle.validate(fitted, x, actual, predicted)

    estimate = fitted.estimate(x)
    assert estimate.rmse == pytest.approx(np.sqrt(np.mean(sigma**2)), rel=0.08)
    assert estimate.mae == pytest.approx(np.mean(sigma) * np.sqrt(2 / np.pi), rel=0.08)
    assert figures["dle_val_rmse_relative_error"] < 0.1 and figures["dle_val_mae_relative_error"] < 0.1
    assert figures["dle_val_estimated_rmse"] == estimate.rmse


def test_the_estimate_follows_a_shift_towards_noisier_rows(fitted: dle.FittedEstimator) -> None:
    """Drift moves traffic to mobile and satellite links: the known loss rises, and the estimate with
    it; no label is used. (The squared error is heavy-tailed: its estimate is the looser one.)"""
    noisy, predicted, _, sigma = known_loss(3000, seed=3, drift=0.5)
    calm_sigma = known_loss(3000, seed=3)[3]
    assert np.sqrt(np.mean(sigma**2)) > 1.3 * np.sqrt(np.mean(calm_sigma**2))

    estimate = fitted.estimate(dle.design_matrix(dle.frame_rows(noisy), predicted))

    assert estimate.mae == pytest.approx(np.mean(sigma) * np.sqrt(2 / np.pi), rel=0.1)
    assert estimate.rmse == pytest.approx(np.sqrt(np.mean(sigma**2)), rel=0.15)


def test_the_onnx_form_estimates_what_the_fitted_one_does(
    fitted: dle.FittedEstimator, tmp_path: Path
) -> None:
    dle.save(fitted, tmp_path)
    loaded = dle.LossEstimator.from_folder(tmp_path)
    frame, predicted, _, _ = known_loss(500, seed=4)
    rows = dle.frame_rows(frame)

    served = loaded.estimate(rows, predicted)

    direct = fitted.estimate(dle.design_matrix(rows, predicted))
    assert served.rows == 500
    assert served.rmse == pytest.approx(direct.rmse, rel=1e-4)
    assert served.mae == pytest.approx(direct.mae, rel=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "absolute_error.onnx",
        "loss_estimator.json",
        "squared_error.onnx",
    ]


def test_an_estimator_of_another_schema_is_refused(fitted: dle.FittedEstimator, tmp_path: Path) -> None:
    dle.save(fitted, tmp_path)
    manifest = tmp_path / "loss_estimator.json"
    manifest.write_text(manifest.read_text().replace('"prediction"', '"predicted_value"'))
    with pytest.raises(ValueError, match="columns differ"):
        dle.LossEstimator.from_folder(tmp_path)


def test_the_design_matrix_encodes_categories_and_appends_the_prediction() -> None:
    row = {name: 1.0 for name in FEATURE_NAMES} | {
        "network_type": "5g",
        "protocol": "mystery",
        "region": "europe",
    }
    x = dle.design_matrix([row], [42.0])
    columns = dle.columns()
    assert x.shape == (1, len(columns)) and x.dtype == np.float32
    hot = {columns[i] for i in np.flatnonzero(x[0][:-1] == 1.0)} - set(FEATURE_NAMES)
    assert hot == {"network_type=5g", "region=europe"}, "an unknown protocol sets no indicator"
    assert x[0][-1] == 42.0
    with pytest.raises(ValueError, match="1 rows but 2 predictions"):
        dle.design_matrix([row], [1.0, 2.0])


def test_negative_loss_estimates_count_as_zero() -> None:
    estimate = dle.estimate_from(np.array([-1.0, 3.0]), np.array([-4.0, 8.0]))
    assert (estimate.rows, estimate.mae, estimate.rmse) == (2, 1.5, 2.0)
    with pytest.raises(ValueError, match="no rows"):
        dle.estimate_from(np.array([]), np.array([]))
