"""The monitor's Prometheus metrics, in a registry of their own (one per app).

The drift and live-quality series keep the `gateway_` names they had when the gateway computed them
(dashboards and alert rules use them; docs/monitoring.md, "Metric reference"); estimated quality,
new with the monitor, is `mlops_estimated_*`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
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
    # Drift and live quality of the served version (services/monitor/windows.py).
    feature_psi: Gauge
    feature_ks: Gauge
    prediction_psi: Gauge
    drifted_ratio: Gauge
    dataset_drift: Gauge
    window_size: Gauge
    live_mae: Gauge
    live_rmse: Gauge
    live_r2: Gauge
    # Estimated quality of the served version (contracts/dle.py): no labels needed.
    estimated_mae: Gauge
    estimated_rmse: Gauge
    estimated_rows: Gauge
    window_errors: Counter
    last_window: Gauge
    window_duration: Gauge
    _exported: set[SeriesKey] = field(default_factory=set, init=False)

    @classmethod
    def create(cls) -> MonitorMetrics:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        r = registry
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
            feature_psi=Gauge(
                "gateway_feature_drift_psi", "PSI, window vs reference.", ["model", "feature"], registry=r
            ),
            feature_ks=Gauge(
                "gateway_feature_drift_ks",
                "KS statistic (numeric features).",
                ["model", "feature"],
                registry=r,
            ),
            prediction_psi=Gauge(
                "gateway_prediction_drift_psi",
                "PSI of predictions, window vs reference.",
                ["model"],
                registry=r,
            ),
            drifted_ratio=Gauge(
                "gateway_drifted_features_ratio",
                "Share of features over the PSI threshold.",
                ["model"],
                registry=r,
            ),
            dataset_drift=Gauge(
                "gateway_dataset_drift",
                "1 when the drifted share exceeds the dataset-drift threshold.",
                ["model"],
                registry=r,
            ),
            window_size=Gauge(
                "gateway_drift_window_size",
                "Requests rows in the current drift window.",
                ["model"],
                registry=r,
            ),
            live_mae=Gauge("gateway_live_mae", "MAE over recent feedback.", ["model"], registry=r),
            live_rmse=Gauge("gateway_live_rmse", "RMSE over recent feedback.", ["model"], registry=r),
            live_r2=Gauge("gateway_live_r2", "R2 over recent feedback.", ["model"], registry=r),
            estimated_mae=Gauge(
                "mlops_estimated_mae",
                "MAE estimated by the served version's loss estimator over the drift window, no labels.",
                ["model"],
                registry=r,
            ),
            estimated_rmse=Gauge(
                "mlops_estimated_rmse",
                "RMSE estimated by the served version's loss estimator over the drift window, no labels.",
                ["model"],
                registry=r,
            ),
            estimated_rows=Gauge(
                "mlops_estimated_rows",
                "Predictions the estimated MAE and RMSE cover.",
                ["model"],
                registry=r,
            ),
            window_errors=Counter(
                "mlops_monitor_window_errors",
                "Drift and live-quality computations that failed: the prediction log or the registry "
                "unreachable (the last values are kept), or a window that could not be scored.",
                registry=r,
            ),
            last_window=Gauge(
                "mlops_monitor_last_window_timestamp_seconds",
                "Unix time of the last pass that computed drift and live quality of every model.",
                registry=r,
            ),
            window_duration=Gauge(
                "mlops_monitor_window_duration_seconds",
                "How long the last pass over the prediction log took.",
                registry=r,
            ),
        )

    def set_test_metrics(self, values: Mapping[SeriesKey, float]) -> None:
        """Export exactly `values`: series of versions no longer behind an alias disappear."""
        for stale in self._exported - values.keys():
            self.test_metric.remove(*stale)
        for key, value in values.items():
            self.test_metric.labels(*key).set(value)
        self._exported = set(values)

    def clear_drift(self, model: str, features: Iterable[str]) -> None:
        """Remove a model's drift gauges (a new version, no profile, a window that cannot be scored):
        absent, not stale. The window size stays."""
        for feature in features:
            remove(self.feature_psi, model, feature)
            remove(self.feature_ks, model, feature)
        for gauge in (self.prediction_psi, self.drifted_ratio, self.dataset_drift):
            remove(gauge, model)

    def clear_quality(self, model: str) -> None:
        """Remove a model's live quality (a new version, or no recent feedback)."""
        for gauge in (self.live_mae, self.live_rmse, self.live_r2):
            remove(gauge, model)

    def clear_estimate(self, model: str) -> None:
        """Remove a model's estimated quality (a new version, no estimator, no row to score)."""
        for gauge in (self.estimated_mae, self.estimated_rmse, self.estimated_rows):
            remove(gauge, model)


def remove(gauge: Gauge, *labels: str) -> None:
    """Remove one series if it is exported."""
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
