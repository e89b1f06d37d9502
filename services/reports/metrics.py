"""The reports service's Prometheus gauges: the leaderboard, read at each scrape."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.reports.leaderboard import Entry

log = logging.getLogger(__name__)


class LeaderboardCollector(Collector):
    """The leaderboard as gauges, read from the cached leaderboard at each scrape."""

    def __init__(self, read: Callable[[], dict[str, list[Entry]]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        metric = GaugeMetricFamily(
            "mlops_leaderboard_test_metric",
            "Test metric of each participant's best candidate per target.",
            labels=["participant", "target", "model", "metric"],
        )
        rank = GaugeMetricFamily(
            "mlops_leaderboard_rank", "Rank by test RMSE (1 is best).", labels=["participant", "target"]
        )
        runs = GaugeMetricFamily(
            "mlops_leaderboard_runs",
            "Candidate runs per participant and target.",
            labels=["participant", "target"],
        )
        cpu = GaugeMetricFamily(
            "mlops_leaderboard_cpu_seconds",
            "Training CPU seconds of the best candidate.",
            labels=["participant", "target"],
        )
        last = GaugeMetricFamily(
            "mlops_leaderboard_last_run_timestamp_seconds",
            "Unix time of the last candidate run.",
            labels=["participant", "target"],
        )
        up = GaugeMetricFamily("mlops_leaderboard_up", "1 when the last leaderboard read from MLflow worked.")
        try:
            board = self.read()
        except Exception as exc:  # a scrape must answer; the gauge says the read failed
            log.warning("leaderboard for /metrics failed: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for target, entries in board.items():
            for i, e in enumerate(entries, start=1):
                for key in ("test_mae", "test_rmse", "test_r2"):
                    value = getattr(e, key)
                    if value is not None:
                        metric.add_metric([e.participant, target, e.model, key], value)
                rank.add_metric([e.participant, target], i)
                runs.add_metric([e.participant, target], e.runs)
                if e.cpu_seconds is not None:
                    cpu.add_metric([e.participant, target], e.cpu_seconds)
                last.add_metric([e.participant, target], e.last_run_ms / 1000)
        yield from (metric, rank, runs, cpu, last, up)
