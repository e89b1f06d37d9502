"""Drift, live and estimated quality of the served versions, from the prediction log of every
gateway replica.

Every MONITOR_INTERVAL_S, for each model: the version of its newest logged prediction is the one the
gateways serve (mid-rollout too); its reference profile and loss estimator come from the registry
once per version. Drift compares the version's newest rows (contracts.predlog.drift_window) with that
profile through the shared maths (contracts.drift); estimated quality is the loss estimator's MAE and
RMSE over the same rows, no labels needed (contracts.dle); live quality is MAE/RMSE/R2 of its newest
feedback (contracts.predlog.live_quality). docs/monitoring.md, "Drift and live quality" and
"Estimated quality (DLE)".

A pass reads the log first, for every model, and only then changes the gauges: with the database
down the last values stay, the error is counted and logged in one line, and the next interval tries
again. A new version, a window that cannot be scored or no recent feedback removes the series
(absent, not stale): an alert on the old version's values resolves instead of firing on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import psycopg2.extensions
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts import dle, predlog
from contracts.drift import DriftReport, drift_report, load_profile
from contracts.registry import is_absent
from contracts.schema import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from contracts.settings import libpq_uri
from services.monitor import Settings
from services.monitor.metrics import MonitorMetrics, remove
from services.monitor.schedule import Periodic, one_line

log = logging.getLogger(__name__)

Profile = Mapping[str, Any]
# Reference profiles and loss estimators kept per model: the served version and the one before it (a
# rollout answers with both for a while, and each must not be read from the registry again at every
# switch).
PROFILES_KEPT = 2
# The columns a row needs for the loss estimator: the whole schema (in the shape `usable` reads).
SCHEMA_COLUMNS: Profile = {"numeric": NUMERIC_FEATURES, "categorical": CATEGORICAL_FEATURES}


@dataclass(frozen=True)
class LogRead:
    """What one pass read of one model: its served version, drift window and live quality."""

    version: str | None
    rows: list[tuple[Any, float | None]]
    quality: predlog.Quality | None


def profiled_features(profile: Profile) -> list[str]:
    return [*profile["numeric"], *profile["categorical"]]


def usable(features: Any, profile: Profile) -> bool:
    """A row drift can score: an object carrying every profiled feature, numeric ones as numbers."""
    if not isinstance(features, dict):
        return False
    for name in profile["numeric"]:
        value = features.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return False
    return all(name in features for name in profile["categorical"])


def window_report(
    profile: Profile, rows: Sequence[tuple[Any, float | None]], psi_threshold: float
) -> tuple[DriftReport, int]:
    """The drift of the usable rows of a window, and how many there were."""
    kept = [(features, prediction) for features, prediction in rows if usable(features, profile)]
    columns = {name: [features[name] for features, _ in kept] for name in profiled_features(profile)}
    predictions = [p for _, p in kept if isinstance(p, int | float) and math.isfinite(p)]
    return drift_report(profile, columns, predictions, psi_threshold), len(kept)


def estimable(rows: Sequence[tuple[Any, float | None]]) -> tuple[list[dict[str, Any]], list[float]]:
    """The rows of a window the loss estimator can score (every schema feature, a finite
    prediction), and their predictions."""
    kept = [
        (features, float(prediction))
        for features, prediction in rows
        if usable(features, SCHEMA_COLUMNS)
        and isinstance(prediction, int | float)
        and not isinstance(prediction, bool)
        and math.isfinite(prediction)
    ]
    return [features for features, _ in kept], [prediction for _, prediction in kept]


class WindowMonitor(Periodic):
    """Computes drift, live and estimated quality of every model from the prediction log every
    `interval_s`."""

    name = "prediction-log"

    def __init__(
        self, settings: Settings, client: MlflowClient, metrics: MonitorMetrics, models: Sequence[str]
    ) -> None:
        super().__init__(settings.interval_s)
        self.settings, self.client, self.metrics, self.models = settings, client, metrics, list(models)
        self._dsn = libpq_uri(settings.monitoring.db_uri)
        self._conn: psycopg2.extensions.connection | None = None
        self._served: dict[str, str | None] = {}  # model -> the version whose series are exported
        self._profiles: dict[str, dict[str, Profile | None]] = {}  # model -> version -> its profile
        self._estimators: dict[str, dict[str, dle.LossEstimator | None]] = {}  # the same for estimators
        self._run_ids: dict[str, dict[str, str | None]] = {}  # model -> version -> its run
        self._exported: dict[str, list[str]] = {}  # model -> features with drift series
        self._verdicts: dict[str, bool] = {}  # model -> the last dataset-drift verdict (logged on change)
        self._failing = False

    def run_once(self) -> bool:
        return self.compute()

    def compute(self) -> bool:
        """One pass over every model. True when everything was computed."""
        started = time.monotonic()
        try:
            reads = self._read_log()
        except psycopg2.Error as exc:
            self._close()
            self._fail(f"prediction log unreadable, keeping the last values: {one_line(exc)}")
            self.metrics.window_duration.set(time.monotonic() - started)
            return False
        ok = True
        for model, read in reads.items():
            ok = self._publish(model, read) and ok
        self.metrics.window_duration.set(time.monotonic() - started)
        if ok:
            self.metrics.last_window.set_to_current_time()
            if self._failing:
                log.info("drift and live quality computed again")
                self._failing = False
        return ok

    def stop(self, timeout: float = 10) -> None:
        super().stop(timeout)
        self._close()

    # -- reading -------------------------------------------------------------------------------------

    def _cursor(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(
                self._dsn, connect_timeout=5, application_name="monitor", options="-c statement_timeout=30000"
            )
            self._conn.set_session(readonly=True, autocommit=True)
        return self._conn.cursor()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
            self._conn = None

    def _read_log(self) -> dict[str, LogRead]:
        s = self.settings
        now = datetime.now(UTC)
        drift_since = now - timedelta(seconds=s.drift.max_age_s)
        feedback_since = now - timedelta(seconds=s.feedback.max_age_s)
        reads: dict[str, LogRead] = {}
        with self._cursor() as cur:
            for model in self.models:
                version = predlog.served_version(cur, model)
                if version is None:
                    reads[model] = LogRead(None, [], None)
                    continue
                rows = predlog.drift_window(
                    cur, model, version, s.drift.window, s.drift.max_rows_per_request, drift_since
                )
                quality = predlog.live_quality(cur, model, version, s.feedback.window, feedback_since)
                reads[model] = LogRead(version, rows, quality)
        return reads

    # -- publishing ----------------------------------------------------------------------------------

    def _publish(self, model: str, read: LogRead) -> bool:
        m = self.metrics
        if model not in self._served or read.version != self._served[model]:
            if self._served.get(model) is not None:
                log.info("%s: now serving v%s (was v%s): drift and quality start over", model,
                         read.version, self._served[model])  # fmt: skip
            m.clear_drift(model, self._exported.pop(model, []))
            m.clear_quality(model)
            m.clear_estimate(model)
            self._verdicts.pop(model, None)
            self._served[model] = read.version
        if read.version is None:  # nothing logged yet
            m.window_size.labels(model).set(0)
            return True
        if read.quality is not None:
            self._publish_quality(model, read.quality)
        drift_ok = self._publish_drift(model, read.version, read.rows)
        return self._publish_estimate(model, read.version, read.rows) and drift_ok

    def _publish_quality(self, model: str, quality: predlog.Quality) -> None:
        m = self.metrics
        if quality.pairs == 0 or quality.mae is None or quality.rmse is None:
            m.clear_quality(model)
            return
        m.live_mae.labels(model).set(quality.mae)
        m.live_rmse.labels(model).set(quality.rmse)
        if quality.r2 is None:  # the actual values have no variance (yet)
            remove(m.live_r2, model)
        else:
            m.live_r2.labels(model).set(quality.r2)

    def _run_id(self, model: str, version: str) -> str | None:
        """The run behind a version (None: not in the registry), read once per version."""
        cached = self._run_ids.setdefault(model, {})
        if version not in cached:
            try:
                cached[version] = self.client.get_model_version(model, version).run_id or None
            except MlflowException as exc:
                if not is_absent(exc):
                    raise
                cached[version] = None
            for old in list(cached)[:-PROFILES_KEPT]:
                del cached[old]
        return cached[version]

    def _per_version(
        self, cache: dict[str, dict[str, Any]], model: str, version: str,
        load: Callable[[MlflowClient, str], Any], what: str,
    ) -> Any:  # fmt: skip
        """An artifact of the version's run, read from the registry once per version (None: the version
        has none, or is not in the registry). A registry failure raises and is not cached."""
        cached = cache.setdefault(model, {})
        if version in cached:
            return cached[version]
        run_id = self._run_id(model, version)
        found = load(self.client, run_id) if run_id else None
        if found is None:
            log.info("%s v%s has no %s", model, version, what)
        cached[version] = found
        for old in list(cached)[:-PROFILES_KEPT]:  # oldest first
            del cached[old]
        return found

    def _profile(self, model: str, version: str) -> Profile | None:
        profile: Profile | None = self._per_version(
            self._profiles, model, version, load_profile, "reference profile: no drift series"
        )
        return profile

    def _estimator(self, model: str, version: str) -> dle.LossEstimator | None:
        estimator: dle.LossEstimator | None = self._per_version(
            self._estimators, model, version, dle.load, "loss estimator: no estimated quality"
        )
        return estimator

    def _publish_estimate(self, model: str, version: str, rows: list[tuple[Any, float | None]]) -> bool:
        """Estimated MAE/RMSE of the window's rows, from the first one on (no minimum: the row count
        is exported with it). Absent while the version has no estimator or no row can be scored."""
        m = self.metrics
        try:
            estimator = self._estimator(model, version)
        except Exception as exc:  # the registry down: whatever the cause, the last values stay
            self._fail(f"loss estimator of {model} v{version} unreadable, keeping the last values: "
                       f"{one_line(exc)}")  # fmt: skip
            return False
        features, predictions = estimable(rows)
        if estimator is None or not features:
            m.clear_estimate(model)
            return True
        try:
            estimate = estimator.estimate(features, predictions)
        except (ValueError, TypeError, KeyError, RuntimeError) as exc:  # an estimator this code cannot run
            m.clear_estimate(model)
            self._fail(f"estimated quality of {model} v{version} not computed: {one_line(exc)}")
            return False
        m.estimated_mae.labels(model).set(estimate.mae)
        m.estimated_rmse.labels(model).set(estimate.rmse)
        m.estimated_rows.labels(model).set(estimate.rows)
        return True

    def _publish_drift(self, model: str, version: str, rows: list[tuple[Any, float | None]]) -> bool:
        m, s = self.metrics, self.settings
        try:
            profile = self._profile(model, version)
        except Exception as exc:  # the registry down: whatever the cause, the last values stay
            self._fail(f"reference profile of {model} v{version} unreadable, keeping the last values: "
                       f"{one_line(exc)}")  # fmt: skip
            return False
        if profile is None:
            m.window_size.labels(model).set(0)
            return True
        try:
            report, size = window_report(profile, rows, s.drift.psi_threshold)
        except (ValueError, TypeError, KeyError) as exc:  # a profile this code cannot read
            m.clear_drift(model, self._exported.pop(model, []))
            self._fail(f"drift of {model} v{version} not computed: {one_line(exc)}")
            return False
        m.window_size.labels(model).set(size)
        if size < s.drift.min_rows:  # too few recent rows to score: no drift series
            m.clear_drift(model, self._exported.pop(model, []))
            self._verdicts.pop(model, None)
            return True
        for feature, value in report.psi.items():
            m.feature_psi.labels(model, feature).set(value)
        for feature, value in report.ks.items():
            m.feature_ks.labels(model, feature).set(value)
        if report.prediction_psi is None:
            remove(m.prediction_psi, model)
        else:
            m.prediction_psi.labels(model).set(report.prediction_psi)
        m.drifted_ratio.labels(model).set(report.drifted_share)
        drifted = report.drifted_share > s.dataset_drift.share
        m.dataset_drift.labels(model).set(1 if drifted else 0)
        self._exported[model] = list(report.psi)
        # One line when the verdict changes; every report only at debug level.
        level = logging.DEBUG if drifted == self._verdicts.get(model) else logging.INFO
        self._verdicts[model] = drifted
        log.log(
            level,
            "drift of %s v%s over %d rows: %d/%d features drifted: %s",
            model, version, size, len(report.drifted), len(report.psi),
            "dataset drift" if drifted else "no dataset drift",
        )  # fmt: skip
        return True

    def _fail(self, message: str) -> None:
        self.metrics.window_errors.inc()
        self._failing = True
        log.warning(message)
