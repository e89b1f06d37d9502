"""services.reports pieces without servers: windows, the description link, the plots' style, a
report rendered from hand-made runs."""

from __future__ import annotations

import re

import pytest

from contracts import reports as names
from services.reports.collect import Candidate, ReportData, Session, Version
from services.reports.report import render
from services.reports.serving import ServingData, window_seconds


@pytest.mark.parametrize(("window", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800)])
def test_windows(window: str, seconds: int) -> None:
    assert window_seconds(window) == seconds


@pytest.mark.parametrize("window", ["", "1", "0h", "1w", "1h30m", "-1h", "1 h"])
def test_bad_windows_name_the_expected_form(window: str) -> None:
    with pytest.raises(ValueError, match="expected a number and a unit s, m, h or d"):
        window_seconds(window)


def test_the_report_link_replaces_its_line_and_keeps_the_rest() -> None:
    url = "http://localhost:8003/reports/alice/sessions/abc"
    assert names.describe_with_link(None, url) == f"Report: [{url}]({url})"
    first = names.describe_with_link("Trained for the workshop.\n", url)
    assert first == f"Trained for the workshop.\n\nReport: [{url}]({url})"
    again = names.describe_with_link(first, url + "2")
    assert (
        again.count("Report:") == 1 and again.startswith("Trained for the workshop.") and again.endswith("2)")
    )


def test_report_paths_quote_the_experiment() -> None:
    assert names.report_path("alice") == "/reports/alice"
    assert names.report_path("a b/c", "r1") == "/reports/a%20b%2Fc/sessions/r1"


def candidate(run_id: str, model: str, val_rmse: float, test_rmse: float, cpu: float) -> Candidate:
    metrics = {"val_rmse": val_rmse, "test_rmse": test_rmse, "val_mae": 1.0, "test_mae": 2.0}
    metrics |= {"val_r2": 0.5, "test_r2": 0.25, names.CPU_SECONDS: cpu, names.PEAK_RSS_MB: 300.0}
    metrics[names.FIT_SECONDS] = cpu / 2
    return Candidate(run_id, f"{model}-latency_ms", model, "latency_ms", "s1", "alice", 1_000, 5_000, metrics)


def test_a_report_from_hand_made_runs_says_what_the_numbers_say() -> None:
    data = ReportData(
        "alice",
        "1",
        [Session("s1", "session-1", "alice", 1_000, 9_000, "FINISHED", {}, ("latency_ms",))],
        # The forest is best on validation, though linear regression is better on test: the
        # trainer's choice (validation) is the best, and the text says it is worse on test.
        [
            candidate("r1", "linear-regression", 12.0, 10.0, 1.0),
            candidate("r2", "random-forest", 11.0, 11.0, 4.0),
        ],
        {
            "latency-predictor": [
                Version(
                    "latency-predictor",
                    "latency_ms",
                    "1",
                    "r2",
                    2_000,
                    ("production",),
                    {
                        "promotion.decision": "promoted",
                        "promotion.reason": "no production version yet",
                        "model": "random-forest",
                    },
                    11.0,
                    "alice",
                )
            ]
        },  # fmt: skip
    )
    unavailable = ServingData("1h", "http://127.0.0.1:1", available=False, reason="ConnectionError: refused")
    report = render(data, unavailable)
    assert report.summary[0].startswith("Best for latency_ms (lowest validation RMSE): random-forest")
    assert "10.0% higher test RMSE than linear-regression" in report.summary[0]
    assert "(4.0x the CPU of linear-regression)" in report.summary[0]
    assert report.summary[1].startswith("latency-predictor: production is v1 (random-forest, test RMSE 11)")
    assert "Prometheus could not be read: ConnectionError: refused; live" in report.summary[2]
    assert re.search(r'<tr data-run-id="r2" data-model="random-forest"[^>]*class="best"', report.html)
    assert 'id="plot-quality-latency_ms"' in report.html and 'id="plot-cost-latency_ms"' in report.html
    assert 'id="serving-unavailable"' in report.html
    # Text from MLflow is escaped, never markup.
    data.candidates[0] = candidate("r1", "<b>x</b>", 12.0, 10.0, 1.0)
    assert "<b>x</b>" not in render(data, None).html


def test_the_cache_keeps_values_and_lets_a_page_use_another_key() -> None:
    from services.reports.app import Cache

    cache = Cache(ttl_s=60)
    calls: list[str] = []

    def board() -> str:
        calls.append("board")
        return "b"

    assert cache.get(("page",), lambda: cache.get(("board",), board) + "!") == "b!"
    assert cache.get(("board",), board) == "b" and calls == ["board"]
