"""Read the training-time test metrics of aliased model versions, once or periodically."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts.registry import is_absent, version_by_alias
from services.monitor.metrics import MonitorMetrics, SeriesKey

log = logging.getLogger(__name__)

TEST_METRICS = ("test_mae", "test_rmse", "test_r2")


def read_test_metrics(
    client: MlflowClient, models: Sequence[str], aliases: Sequence[str]
) -> dict[SeriesKey, float]:
    """Test metrics of each version behind an alias; aliases not set and metrics not logged are left out.

    Any other failure (tracking server down) raises: a partial answer would drop series.
    """
    values: dict[SeriesKey, float] = {}
    for model in models:
        for alias in aliases:
            version = version_by_alias(client, model, alias)
            if version is None or not version.run_id:
                continue
            try:
                logged = client.get_run(version.run_id).data.metrics
            except MlflowException as exc:
                if is_absent(exc):  # a deleted run
                    continue
                raise
            for metric in TEST_METRICS:
                if metric in logged:
                    values[(model, alias, str(version.version), metric)] = float(logged[metric])
    return values


class Refresher:
    """Refreshes the exported test metrics every `interval_s` seconds, in a background thread."""

    def __init__(
        self,
        client: MlflowClient,
        models: Sequence[str],
        aliases: Sequence[str],
        metrics: MonitorMetrics,
        interval_s: float,
    ) -> None:
        self.client, self.models, self.aliases = client, list(models), list(aliases)
        self.metrics, self.interval_s = metrics, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def refresh(self) -> bool:
        """One refresh; on failure keep the last values, count it and say why. True on success."""
        started = time.monotonic()
        try:
            values = read_test_metrics(self.client, self.models, self.aliases)
        except Exception as exc:  # whatever the cause, the last values stay exported
            self.metrics.refresh_errors.inc()
            self._failing = True
            log.warning("registry refresh failed, keeping the last values: %s", _one_line(exc))
            return False
        self.metrics.set_test_metrics(values)
        self.metrics.last_refresh.set_to_current_time()
        if self._failing:
            log.info("registry refresh works again")
            self._failing = False
        log.debug("refreshed %d series in %.2f s", len(values), time.monotonic() - started)
        return True

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="registry-refresh", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.interval_s)


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
