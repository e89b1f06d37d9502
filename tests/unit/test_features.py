"""The preprocessing pipeline scales numerics and one-hot encodes every schema category."""

from __future__ import annotations

import numpy as np

from contracts import synthetic
from contracts.schema import CATEGORICAL_FEATURES, FEATURE_NAMES, FEATURES, NUMERIC_FEATURES
from trainer.features import build_preprocessor, preprocessor_params


def test_output_width_and_scaling() -> None:
    frame = synthetic.generate(2000, seed=4)[list(FEATURE_NAMES)]
    pre = build_preprocessor().fit(frame)
    out = pre.transform(frame)
    n_categories = sum(len(f.categories) for f in FEATURES if not f.is_numeric)
    assert out.shape == (2000, len(NUMERIC_FEATURES) + n_categories)
    numeric = np.asarray(out[:, : len(NUMERIC_FEATURES)])
    assert np.allclose(numeric.mean(axis=0), 0, atol=1e-6)
    assert np.allclose(numeric.std(axis=0), 1, atol=1e-3)


def test_unknown_category_at_predict_time_is_ignored_not_fatal() -> None:
    frame = synthetic.generate(200, seed=4)[list(FEATURE_NAMES)]
    pre = build_preprocessor().fit(frame)
    odd = frame.head(1).copy()
    odd["protocol"] = "sctp"
    row = pre.transform(odd)
    protocol_columns = [i for i, n in enumerate(pre.get_feature_names_out()) if n.startswith("protocol_")]
    assert row[0, protocol_columns].sum() == 0


def test_params_describe_the_configuration() -> None:
    params = preprocessor_params()
    assert params["preprocessing.categorical_features"].split(",") == list(CATEGORICAL_FEATURES)
    assert "StandardScaler" in params["preprocessing.numeric"]
