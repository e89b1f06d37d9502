"""The ONNX form of every candidate predicts what its scikit-learn pipeline predicts, on the whole
test set of both targets; a version that cannot be compiled is served as scikit-learn, saying why."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import onnxruntime
import pandas as pd
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.pipeline import Pipeline

from contracts import synthetic
from contracts.schema import FEATURE_NAMES, FEATURES, TARGETS
from trainer import compiled, data
from trainer.features import build_preprocessor
from trainer.train import CANDIDATES, build_candidate, signature


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    train, _, test = data.split(synthetic.generate(4000, seed=7), seed=7)
    return train, test


def fit(name: str, target: str, train: pd.DataFrame) -> Pipeline:
    estimator, _ = build_candidate(name, seed=0)
    pipeline = Pipeline([("preprocess", build_preprocessor()), ("model", estimator)])
    return pipeline.fit(train[list(FEATURE_NAMES)], train[target])


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("name", CANDIDATES)
def test_onnx_predictions_equal_the_pipelines_within_the_tolerance(
    name: str, target: str, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, test = frames
    pipeline = fit(name, target, train)
    rows = test[list(FEATURE_NAMES)]
    expected = pipeline.predict(rows)
    actual = compiled.onnx_predict(compiled.to_onnx(pipeline), rows)
    tolerance = compiled.TOLERANCE
    np.testing.assert_allclose(actual, expected, rtol=tolerance.rtol, atol=tolerance.atol)
    assert not np.array_equal(actual, np.zeros_like(actual))


def test_scaling_in_float32_would_move_rows_across_tree_splits(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """Why numbers enter the graph as float64 (trainer/compiled.py): the same forest converted with
    float32 inputs misses the tolerance."""
    train, test = frames
    pipeline = fit("random-forest", "latency_ms", train)
    types = [
        (f.name, FloatTensorType([None, 1]) if f.is_numeric else StringTensorType([None, 1]))
        for f in FEATURES
    ]
    graph = convert_sklearn(pipeline, initial_types=types, target_opset=compiled.TARGET_OPSET)
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = test[list(FEATURE_NAMES)]
    feed = {
        f.name: rows[f.name].to_numpy(dtype=np.float32 if f.is_numeric else object).reshape(-1, 1)
        for f in FEATURES
    }
    float32 = np.asarray(session.run(None, feed)[0], dtype=np.float64).reshape(-1)
    expected = pipeline.predict(rows)
    tolerance = compiled.TOLERANCE
    assert not np.allclose(float32, expected, rtol=tolerance.rtol, atol=tolerance.atol)


class Unconvertible(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """A regressor skl2onnx has no converter for."""

    def fit(self, x: object, y: np.ndarray) -> Unconvertible:
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.mean_)


@pytest.fixture
def tracking(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return uri


def test_a_pipeline_that_does_not_convert_is_served_as_scikit_learn_with_the_reason(
    tracking: str, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, test = frames
    pipeline = Pipeline([("preprocess", build_preprocessor()), ("model", Unconvertible())])
    pipeline.fit(train[list(FEATURE_NAMES)], train["latency_ms"])
    example = train[list(FEATURE_NAMES)].head(5)
    with mlflow.start_run():
        result = compiled.compile_and_log(
            pipeline, test[list(FEATURE_NAMES)], signature(pipeline, example), example
        )
    assert result.model_uri is None
    assert result.tags["serving.form"] == "sklearn"
    assert result.tags["onnx.error"].startswith("conversion failed: ")
    assert "Unconvertible" in result.tags["onnx.error"]


def test_predictions_outside_the_tolerance_are_not_served(
    tracking: str, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, test = frames
    pipeline = fit("gradient-boosting", "latency_ms", train)
    example = train[list(FEATURE_NAMES)].head(5)
    exact = compiled.Tolerance(rtol=0.0, atol=0.0)  # float32 trees cannot meet it
    with mlflow.start_run():
        result = compiled.compile_and_log(
            pipeline, test[list(FEATURE_NAMES)], signature(pipeline, example), example, exact
        )
    assert result.model_uri is None
    assert result.tags["serving.form"] == "sklearn"
    assert "differ from scikit-learn's by up to" in result.tags["onnx.error"]
    assert float(result.tags["onnx.max_abs_error"]) > 0
    assert result.tags["onnx.tolerance"] == "rtol=0,atol=0"


def test_the_logged_onnx_form_loads_as_pyfunc_and_predicts_like_the_pipeline(
    tracking: str, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, test = frames
    pipeline = fit("random-forest", "bandwidth_efficiency", train)
    rows = test[list(FEATURE_NAMES)]
    example = train[list(FEATURE_NAMES)].head(5)
    with mlflow.start_run():
        result = compiled.compile_and_log(pipeline, rows, signature(pipeline, example), example)
    assert result.model_uri is not None and result.tags["serving.form"] == "onnx"
    assert int(result.tags["onnx.rows_checked"]) == len(rows)
    model = mlflow.pyfunc.load_model(result.model_uri)
    assert model.metadata.get_input_schema().input_names() == list(FEATURE_NAMES)
    # Columns in another order: the signature, not the position, decides.
    predicted = model.predict(rows[list(reversed(FEATURE_NAMES))])
    assert predicted.dtype == np.float64 and predicted.shape == (len(rows),)
    np.testing.assert_allclose(
        predicted, pipeline.predict(rows), rtol=compiled.TOLERANCE.rtol, atol=compiled.TOLERANCE.atol
    )
    assert float(result.tags["onnx.max_rel_error"]) <= compiled.TOLERANCE.rtol
