"""The benchmark's statistics on known latencies (the numbers docs/benchmarks.md reports)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.bench.bench_gateway import Paired, Result, throughput_ratios


def test_a_constant_extra_millisecond_is_reported_as_such() -> None:
    rng = np.random.default_rng(1)
    direct = rng.normal(0.020, 0.002, 2000).clip(0.010)  # seconds, noisy like a shared machine
    paired = Paired({"onnx-direct": direct, "gateway": direct + 0.001, "gateway-batch": direct.copy()})
    added, kept, (a_lo, a_hi, k_lo, k_hi) = paired.versus("gateway", "onnx-direct", resamples=300)
    assert added == pytest.approx(1.0, abs=1e-6)
    assert kept == pytest.approx(100 * direct.mean() / (direct.mean() + 0.001))
    assert a_lo <= added <= a_hi and k_lo <= kept <= k_hi
    assert paired.versus("gateway-batch", "onnx-direct", resamples=300)[:2] == (0.0, 100.0)
    assert paired.p50_ms("gateway") == pytest.approx(1000 * np.median(direct) + 1.0)


def test_throughput_ratios_pair_targets_round_by_round() -> None:
    rounds = [
        Result("sklearn-direct", 16, 0, 40.0, 1, 1),
        Result("gateway-batch", 16, 0, 400.0, 1, 1),
        Result("sklearn-direct", 16, 1, 20.0, 1, 1),
        Result("gateway-batch", 16, 1, 500.0, 1, 1),
    ]
    assert throughput_ratios(rounds, "gateway-batch", "sklearn-direct") == [10.0, 25.0]
