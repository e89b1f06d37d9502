"""Read the training-time test metrics of aliased model versions, once or periodically."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts.registry import is_absent, version_by_alias
from services.monitor.metrics import MonitorMetrics, SeriesKey
from services.monitor.schedule import Periodic, one_line

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


class Refresher(Periodic):
    """Refreshes the exported test metrics every `interval_s` seconds, in a background thread."""

    name = "registry-refresh"

    def __init__(
        self,
        client: MlflowClient,
        models: Sequence[str],
        aliases: Sequence[str],
        metrics: MonitorMetrics,
        interval_s: float,
    ) -> None:
        super().__init__(interval_s)
        self.client, self.models, self.aliases = client, list(models), list(aliases)
        self.metrics = metrics
        self._failing = False

    def refresh(self) -> bool:
        """One refresh; on failure keep the last values, count it and say why. True on success."""
        started = time.monotonic()
        try:
            values = read_test_metrics(self.client, self.models, self.aliases)
        except Exception as exc:  # whatever the cause, the last values stay exported
            self.metrics.refresh_errors.inc()
            self._failing = True
            log.warning("registry refresh failed, keeping the last values: %s", one_line(exc))
            return False
        self.metrics.set_test_metrics(values)
        self.metrics.last_refresh.set_to_current_time()
        if self._failing:
            log.info("registry refresh works again")
            self._failing = False
        log.debug("refreshed %d series in %.2f s", len(values), time.monotonic() - started)
        return True

    def run_once(self) -> bool:
        return self.refresh()
