"""A sliding window of recent request rows per model, compared with the version's reference profile.

The maths is `trainer.drift` (the same code that builds the profile at training time); this module
only keeps the window and publishes the report as gauges. It runs in the recorder thread, never on
the request path.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from contracts.drift import DriftReport, drift_report
from services.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)


class DriftWindow:
    """The last `size` rows (and predictions) of one model version."""

    def __init__(
        self,
        model: str,
        version: str,
        profile: Mapping[str, Any] | None,
        metrics: GatewayMetrics,
        *,
        size: int,
        min_rows: int,
        every: int,
        min_interval_s: float,
        psi_threshold: float,
        dataset_share: float,
    ) -> None:
        self.model, self.version, self.profile = model, version, profile
        self._metrics = metrics
        self._rows: deque[Mapping[str, Any]] = deque(maxlen=size)
        self._predictions: deque[float] = deque(maxlen=size)
        self._min_rows, self._every, self._min_interval_s = min_rows, every, min_interval_s
        self._last_report = -float("inf")
        self._psi_threshold, self._dataset_share = psi_threshold, dataset_share
        self._features = [*profile["numeric"], *profile["categorical"]] if profile else []
        self._new_rows = 0
        self._dataset_drift: bool | None = None
        metrics.clear_drift(model, self._features)
        metrics.window_size.labels(model).set(0)

    def __len__(self) -> int:
        return len(self._rows)

    def clear_gauges(self) -> None:
        """Remove this window's drift gauges (its version is no longer served)."""
        self._metrics.clear_drift(self.model, self._features)

    def add(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[float]) -> None:
        """Append rows that carry every profiled feature; recompute drift when it is due."""
        if self.profile is None:
            return
        features = self._features
        for row in rows:
            if all(name in row for name in features):
                self._rows.append(row)
                self._new_rows += 1
        self._predictions.extend(predictions)
        self._metrics.window_size.labels(self.model).set(len(self._rows))
        self.publish_if_due()

    @property
    def pending(self) -> bool:
        """DRIFT_EVERY new rows since the last report, and DRIFT_MIN_ROWS in the window."""
        return self._new_rows >= self._every and len(self._rows) >= self._min_rows

    def publish_if_due(self) -> None:
        """Report when pending and the last report is DRIFT_MIN_INTERVAL_S old."""
        now = time.monotonic()
        if self.pending and now - self._last_report >= self._min_interval_s:
            self._new_rows, self._last_report = 0, now
            self.publish()

    def report(self) -> DriftReport | None:
        """The drift of the current window, or None without a profile or enough rows."""
        if self.profile is None or len(self._rows) < self._min_rows:
            return None
        rows = list(self._rows)
        columns = {name: [row[name] for row in rows] for name in self._features}
        return drift_report(self.profile, columns, list(self._predictions), self._psi_threshold)

    def publish(self) -> None:
        """Compute the report and set the drift gauges; a window that cannot be scored is logged."""
        try:
            report = self.report()
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("drift of %s v%s not computed: %s", self.model, self.version, exc)
            return
        if report is None:
            return
        m, model = self._metrics, self.model
        for feature, value in report.psi.items():
            m.feature_psi.labels(model, feature).set(value)
        for feature, value in report.ks.items():
            m.feature_ks.labels(model, feature).set(value)
        if report.prediction_psi is not None:
            m.prediction_psi.labels(model).set(report.prediction_psi)
        m.drifted_ratio.labels(model).set(report.drifted_share)
        drifted = report.drifted_share > self._dataset_share
        m.dataset_drift.labels(model).set(1 if drifted else 0)
        # One line when the verdict changes; every report only at debug level.
        level = logging.DEBUG if drifted == self._dataset_drift else logging.INFO
        self._dataset_drift = drifted
        log.log(
            level,
            "drift of %s v%s over %d rows: %d/%d features drifted: %s",
            model,
            self.version,
            len(self._rows),
            len(report.drifted),
            len(report.psi),
            "dataset drift" if drifted else "no dataset drift",
            extra={"model": model, "version": self.version, "drifted": report.drifted},
        )
