"""The benchmark's statistics on known latencies (the numbers docs/benchmarks.md and
docs/reliability.md report), and how it writes its sections into them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.bench.bench_gateway import Paired, Result, throughput_ratios, write_section
from tests.bench.load import OVERLOAD_ROWS, OVERLOAD_TIMES, Hold, Overload, Probe, p, report
from tests.bench.wrk import Wrk


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


def test_a_section_is_replaced_in_place_and_the_others_kept(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    write_section(doc, "## Load\n\nfirst\n", "# Reliability")
    assert doc.read_text() == "# Reliability\n\n## Load\n\nfirst\n"
    by_hand, kept = "# Reliability\n\n## Faults\n\nby hand\n\n", "\n## Fuzzing\n\nkept\n"
    doc.write_text(by_hand + "## Load\n\nfirst\n\n### rows\n" + kept)
    write_section(doc, "## Load\n\nsecond\n", "# Reliability")
    assert doc.read_text() == by_hand + "## Load\n\nsecond\n" + kept
    write_section(doc, "## Restore\n\nnew\n", "# Reliability")
    assert doc.read_text().endswith("## Fuzzing\n\nkept\n\n## Restore\n\nnew\n")


def test_quantiles_of_the_probe() -> None:
    values = [float(v) for v in range(1, 101)]
    assert p(values, 0.5) == pytest.approx(50.5) and p(values, 0.99) == pytest.approx(99.01)
    assert p([7.0], 0.99) == 7.0 and np.isnan(p([], 0.5))


def test_the_load_report_renders_and_judges_what_it_measured() -> None:
    def run(requests: int, shed: int, p99: float) -> Wrk:
        return Wrk(10, requests, requests / 10, shed, 0, 5.0, p99, requests - shed, shed, shed, 0)

    held = Hold(run(12000, 0, 30.0), [{"gateway": 280.0}, {"gateway": 290.0}, {"gateway": 330.0}], 0.0)
    runs = [
        Overload(
            gateway,
            times * 2048 // OVERLOAD_ROWS,
            run(5000, 500, 900.0),
            Probe("u", b"", [80.0, 120.0 + wait], [2.0]),
        )
        for times in OVERLOAD_TIMES
        for gateway, wait in (("bounded", 0.0), ("unbounded", 400.0 * times))
    ]
    text = report(held, runs, 2048, "make bench", "today", "here")
    assert "| resident memory, gateway: start, halfway, end | 280, 290, 330 MiB" in text
    assert "| **not met** |" in text.split("resident memory, gateway")[1].splitlines()[0]  # +40 MiB late
    assert "| a newcomer's p99, bounded vs unbounded, at 2x and 8x |" in text
    assert (
        "lower with the limit | met |" in text and "every 503 carries Retry-After | yes | yes | met" in text
    )
