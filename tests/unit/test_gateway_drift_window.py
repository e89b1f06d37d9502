"""When the gateway's drift window reports, and what it publishes (real profiles, real registry)."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import drift, synthetic
from contracts.schema import FEATURE_NAMES
from services.gateway.drift_window import DriftWindow
from services.gateway.metrics import GatewayMetrics

MODEL = "latency-predictor"


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    reference = synthetic.generate(3000, seed=1)
    return drift.build_profile(reference[list(FEATURE_NAMES)], reference["latency_ms"])


def rows(n: int, seed: int, shift: float = 0.0) -> list[dict[str, Any]]:
    return synthetic.generate(n, seed=seed, drift=shift)[list(FEATURE_NAMES)].to_dict(orient="records")


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"model": MODEL, **labels})


def window(metrics: GatewayMetrics, profile: dict[str, Any] | None, interval: float = 0.0) -> DriftWindow:
    return DriftWindow(
        MODEL, "1", profile, metrics,
        size=200, min_rows=100, every=50, min_interval_s=interval, psi_threshold=0.2, dataset_share=0.3,
    )  # fmt: skip


def test_reports_once_min_rows_are_in_and_flags_shifted_traffic(profile: dict[str, Any]) -> None:
    metrics = GatewayMetrics()
    calm = window(metrics, profile)
    calm.add(rows(99, seed=2), [])
    assert (
        value(metrics, "gateway_dataset_drift") is None and value(metrics, "gateway_drift_window_size") == 99
    )
    calm.add(rows(101, seed=3), [])
    assert value(metrics, "gateway_dataset_drift") == 0
    calm.add(rows(200, seed=4, shift=1.0), [])
    assert value(metrics, "gateway_dataset_drift") == 1
    assert value(metrics, "gateway_feature_drift_psi", feature="link_utilization") > 0.5  # type: ignore[operator]


def test_min_interval_holds_reports_back(profile: dict[str, Any]) -> None:
    metrics = GatewayMetrics()
    slow = window(metrics, profile, interval=3600)
    slow.add(rows(200, seed=5), [])
    assert value(metrics, "gateway_dataset_drift") == 0
    slow.add(rows(200, seed=6, shift=1.0), [])
    assert slow.pending and value(metrics, "gateway_dataset_drift") == 0  # held back, not lost


def test_no_profile_means_no_drift_metrics_and_a_new_version_clears_them(profile: dict[str, Any]) -> None:
    metrics = GatewayMetrics()
    old = window(metrics, profile)
    old.add(rows(200, seed=7), [])
    assert value(metrics, "gateway_feature_drift_psi", feature="distance_km") is not None
    old.clear_gauges()
    blind = window(metrics, None)
    blind.add(rows(200, seed=8), [])
    assert value(metrics, "gateway_feature_drift_psi", feature="distance_km") is None
    assert (
        value(metrics, "gateway_dataset_drift") is None and value(metrics, "gateway_drift_window_size") == 0
    )
