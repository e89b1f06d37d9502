"""The monitor's Prometheus metrics, in a registry of their own (one per app)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, PlatformCollector, ProcessCollector

# (model, alias, version, metric): the labels of one mlops_model_test_metric series.
SeriesKey = tuple[str, str, str, str]


@dataclass
class MonitorMetrics:
    registry: CollectorRegistry
    test_metric: Gauge
    refresh_errors: Counter
    last_refresh: Gauge
    alerts_received: Counter
    _exported: set[SeriesKey] = field(default_factory=set, init=False)

    @classmethod
    def create(cls) -> MonitorMetrics:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        return cls(
            registry=registry,
            test_metric=Gauge(
                "mlops_model_test_metric",
                "Training-time test metric of the model version behind an alias.",
                ["model", "alias", "version", "metric"],
                registry=registry,
            ),
            refresh_errors=Counter(
                "mlops_monitor_refresh_errors",
                "Registry refreshes that failed (the last values are kept).",
                registry=registry,
            ),
            last_refresh=Gauge(
                "mlops_monitor_last_refresh_timestamp_seconds",
                "Unix time of the last successful registry refresh.",
                registry=registry,
            ),
            alerts_received=Counter(
                "mlops_alerts_received",
                "Alerts delivered by Alertmanager.",
                ["alertname", "status"],
                registry=registry,
            ),
        )

    def set_test_metrics(self, values: Mapping[SeriesKey, float]) -> None:
        """Export exactly `values`: series of versions no longer behind an alias disappear."""
        for stale in self._exported - values.keys():
            self.test_metric.remove(*stale)
        for key, value in values.items():
            self.test_metric.labels(*key).set(value)
        self._exported = set(values)
