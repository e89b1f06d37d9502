"""The benchmark's paired statistics on known latencies (the numbers docs/benchmarks.md reports)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.bench.bench_gateway import Paired, verdict


def test_a_constant_extra_millisecond_is_reported_as_such() -> None:
    rng = np.random.default_rng(1)
    direct = rng.normal(0.020, 0.002, 2000).clip(0.010)  # seconds, noisy like a shared machine
    paired = Paired({"direct": direct, "gateway": direct + 0.001, "gateway-nolimit": direct.copy()})
    added, kept, (a_lo, a_hi, k_lo, k_hi) = paired.versus_direct("gateway", resamples=300)
    assert added == pytest.approx(1.0, abs=1e-6)
    assert kept == pytest.approx(100 * direct.mean() / (direct.mean() + 0.001))
    assert a_lo <= added <= a_hi and k_lo <= kept <= k_hi
    assert paired.versus_direct("gateway-nolimit", resamples=300)[:2] == (0.0, 100.0)


def test_the_verdict_needs_both_targets() -> None:
    assert verdict("gateway", 0.5, 97.0) == "met"
    assert verdict("gateway", 1.2, 97.0) == "NOT met"
    assert verdict("gateway", 0.5, 94.0) == "NOT met"
    assert verdict("gateway-nolimit", 0.5, 97.0) == "(reference)"
