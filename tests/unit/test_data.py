"""The generator honours the schema, is deterministic, and its drift option really shifts data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from contracts import synthetic
from contracts.schema import CATEGORICAL_FEATURES, FEATURE_NAMES, FEATURES, TARGETS
from trainer import data


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic.generate(5000, seed=1)


def test_schema_has_at_least_ten_features_of_both_kinds() -> None:
    assert len(FEATURES) >= 10
    assert len(CATEGORICAL_FEATURES) >= 3
    assert set(TARGETS) == {"latency_ms", "bandwidth_efficiency"}


def test_columns_and_types_follow_the_schema(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == [*FEATURE_NAMES, *TARGETS]
    for feature in FEATURES:
        column = frame[feature.name]
        if feature.is_numeric:
            assert pd.api.types.is_float_dtype(column), feature.name
            assert column.between(feature.low, feature.high).all(), feature.name
        else:
            assert set(column) <= set(feature.categories), feature.name
            assert len(set(column)) == len(feature.categories), f"{feature.name}: a category never occurs"
    assert not frame.isna().any().any()


def test_targets_are_in_physical_ranges(frame: pd.DataFrame) -> None:
    assert (frame["latency_ms"] > 0).all()
    assert frame["bandwidth_efficiency"].between(0, 1).all()
    satellite = frame.loc[frame.network_type == "satellite", "latency_ms"].median()
    fiber = frame.loc[frame.network_type == "fiber", "latency_ms"].median()
    assert satellite > fiber + 400  # geostationary round trip


def test_same_seed_same_data_other_seed_other_data() -> None:
    pd.testing.assert_frame_equal(synthetic.generate(300, seed=5), synthetic.generate(300, seed=5))
    assert not synthetic.generate(300, seed=5).equals(synthetic.generate(300, seed=6))


def test_drift_shifts_feature_distributions(frame: pd.DataFrame) -> None:
    drifted = synthetic.generate(5000, seed=1, drift=1.0)
    assert drifted.link_utilization.mean() > frame.link_utilization.mean() + 0.1
    assert drifted.distance_km.median() > 1.5 * frame.distance_km.median()
    mobile = {"4g", "satellite"}
    assert drifted.network_type.isin(mobile).mean() > frame.network_type.isin(mobile).mean() + 0.1


def test_split_is_disjoint_and_complete(frame: pd.DataFrame) -> None:
    train, val, test = data.split(frame, seed=3)
    assert len(train) + len(val) + len(test) == len(frame)
    assert not set(train.index) & set(test.index)
    assert not set(val.index) & set(test.index)
    assert len(test) == pytest.approx(0.15 * len(frame), abs=1)


@pytest.mark.parametrize("n_rows,drift", [(0, 0.0), (10, -1.0)])
def test_bad_generator_arguments_are_refused(n_rows: int, drift: float) -> None:
    with pytest.raises(ValueError):
        synthetic.generate(n_rows, drift=drift)


def test_no_nan_or_inf_even_under_strong_drift() -> None:
    drifted = synthetic.generate(2000, seed=9, drift=3.0)
    assert np.isfinite(drifted.select_dtypes("number").to_numpy()).all()
