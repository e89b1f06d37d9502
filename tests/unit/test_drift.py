"""Drift statistics on known cases: none on fresh samples of the reference, clear on the generator's
drift option; PSI's basic properties."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from contracts import drift, synthetic
from contracts.schema import FEATURE_NAMES


@pytest.fixture(scope="module")
def profile() -> dict:  # type: ignore[type-arg]
    reference = synthetic.generate(20000, seed=1)
    return drift.build_profile(reference[list(FEATURE_NAMES)], reference["latency_ms"])


def window(frame: pd.DataFrame) -> dict[str, list[object]]:
    return {name: frame[name].tolist() for name in FEATURE_NAMES}


def test_profile_is_json_and_covers_the_schema(profile: dict) -> None:  # type: ignore[type-arg]
    assert json.loads(json.dumps(profile)) == profile
    assert set(profile["numeric"]) | set(profile["categorical"]) == set(FEATURE_NAMES)
    for summary in profile["numeric"].values():
        assert len(summary["proportions"]) == len(summary["edges"]) + 1
        assert sum(summary["proportions"]) == pytest.approx(1.0)
        assert len(summary["sample"]) <= drift.SAMPLE_SIZE


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_fresh_samples_from_the_reference_do_not_drift(profile: dict, seed: int) -> None:  # type: ignore[type-arg]
    fresh = synthetic.generate(500, seed=seed)
    report = drift.drift_report(profile, window(fresh), fresh["latency_ms"])
    assert report.drifted == [], report.psi
    assert max(report.psi.values()) < 0.1
    assert report.prediction_psi is not None and report.prediction_psi < 0.1


def test_the_generators_drift_option_is_detected(profile: dict) -> None:  # type: ignore[type-arg]
    shifted = synthetic.generate(500, seed=5, drift=1.0)
    report = drift.drift_report(profile, window(shifted), shifted["latency_ms"])
    assert {"link_utilization", "distance_km", "network_type"} <= set(report.drifted)
    assert report.drifted_share > 0.3
    assert report.ks["link_utilization"] > 0.2
    assert report.prediction_psi is not None and report.prediction_psi > 0.2


def test_psi_is_zero_for_identical_shares_and_grows_with_the_shift() -> None:
    base = np.array([0.25, 0.25, 0.25, 0.25])
    assert drift.psi(base, base) == pytest.approx(0.0)
    small, large = (
        drift.psi(base, np.array([0.3, 0.2, 0.25, 0.25])),
        drift.psi(base, np.array([0.7, 0.1, 0.1, 0.1])),
    )
    assert 0 < small < large


def test_unseen_category_counts_as_drift() -> None:
    shares = {"tcp": 0.6, "udp": 0.25, "quic": 0.15}
    assert drift.categorical_psi(shares, ["sctp"] * 100) > 1.0
    assert drift.categorical_psi(shares, ["tcp"] * 60 + ["udp"] * 25 + ["quic"] * 15) == pytest.approx(
        0.0, abs=1e-6
    )
