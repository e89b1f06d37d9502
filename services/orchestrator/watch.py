"""After a production alias moves: wait until the new version serves, watch it, roll it back if worse.

The watch compares the new version with the one it replaced, on live traffic:
- error rate: 5xx answers per request through the gateway (Prometheus, `gateway_requests_total` by
  served version), the new version since it serves against the previous one over as long before;
- live RMSE: the prediction log joined with feedback (monitoring database), per version.
It checks every WATCH_POLL_S for WATCH_S. A breach (error rate up by more than
WATCH_MAX_ERROR_RATE_INCREASE with at least WATCH_MIN_REQUESTS requests, or live RMSE above
WATCH_MAX_RMSE_RATIO times the previous version's with at least WATCH_MIN_LABELLED rows each) moves
the alias back at once, if it still names the watched version, and records why on that version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from mlflow.tracking import MlflowClient

from contracts.models import PRODUCTION, served_version
from contracts.registry import version_by_alias
from services.orchestrator import Settings
from services.orchestrator.metrics import OrchestratorMetrics
from services.orchestrator.production import version_rmse

log = logging.getLogger(__name__)

ERRORS = 'sum(increase(gateway_requests_total{{model="{m}",version="{v}",status=~"5.."}}[{w}s]))'
REQUESTS = (
    'sum(increase(gateway_requests_total{{model="{m}",version="{v}",endpoint=~"predict|invocations"}}[{w}s]))'
)
MIN_BASELINE_S = 300.0  # the previous version's error rate: over at least this long before the move


@dataclass
class WatchResult:
    outcome: str  # passed, rolled_back, superseded, rollout_failed
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)
    served_after_s: float | None = None


class Prometheus:
    """Instant queries against Prometheus' HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def scalar(self, promql: str, at: float) -> float | None:
        """The query's single value at time `at`, or None when it has no data."""
        params = {"query": promql, "time": str(at)}
        answer = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        answer.raise_for_status()
        result = answer.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None


class Watcher:
    def __init__(
        self,
        settings: Settings,
        client: MlflowClient,
        metrics: OrchestratorMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.client, self.metrics, self.clock = settings, client, metrics, clock
        self.prometheus = Prometheus(settings.prometheus.url) if settings.prometheus.url else None

    def run(self, model: str, version: str, previous: str | None, stop: threading.Event) -> WatchResult:
        """Wait for the rollout of `version`, then watch it against `previous` (None: nothing to
        compare with or roll back to: the rollout is still awaited)."""
        started = self.clock()
        served = self.wait_served(model, version, stop)
        if served is not None:
            return served
        served_at = self.clock()
        served_after = served_at - started
        if previous is None:
            return WatchResult("passed", "no previous version to compare with", {}, served_after)
        deadline = served_at + self.settings.watch.s
        figures: dict[str, Any] = {}
        while not stop.wait(self.settings.watch.poll_s):
            current = version_by_alias(self.client, model, PRODUCTION)
            if current is None or str(current.version) != version:
                moved = "removed" if current is None else f"moved to v{current.version}"
                return WatchResult(
                    "superseded", f"the alias was {moved} during the watch", figures, served_after
                )
            breach, figures = self.judge(model, version, previous, served_at)
            if breach:
                self.rollback(
                    model, version, previous, breach, "error_rate" if "error rate" in breach else "live_rmse"
                )
                return WatchResult("rolled_back", breach, figures, served_after)
            if self.clock() >= deadline:
                return WatchResult(
                    "passed", f"no breach in {self.settings.watch.s:.0f} s", figures, served_after
                )
        return WatchResult("superseded", "the orchestrator stopped during the watch", figures, served_after)

    def wait_served(self, model: str, version: str, stop: threading.Event) -> WatchResult | None:
        """None once the model server answers as `version`; else why not (rollout failed: not within
        ROLLOUT_TIMEOUT_S, whose default matches the launcher's SERVING_START_TIMEOUT_S; superseded)."""
        deadline = self.clock() + self.settings.rollout.timeout_s
        upstream = self.settings.upstreams().get(model)
        if upstream is None:
            return WatchResult("rollout_failed", f"SERVING_UPSTREAMS names no model server for {model}")
        while not stop.is_set():
            if served_version(upstream) == version:
                return None
            current = version_by_alias(self.client, model, PRODUCTION)
            if current is None or str(current.version) != version:
                return WatchResult("superseded", "the alias moved on before the version served")
            if self.clock() > deadline:
                return WatchResult(
                    "rollout_failed",
                    f"{upstream} did not answer as v{version} within {self.settings.rollout.timeout_s:.0f} s "
                    "(see the serving log)",
                )
            stop.wait(min(2.0, self.settings.watch.poll_s))
        return WatchResult("superseded", "the orchestrator stopped during the rollout")

    def judge(self, model: str, new: str, old: str, served_at: float) -> tuple[str | None, dict[str, Any]]:
        """The first breach of the watch thresholds (None: none yet), and the figures compared."""
        s, now = self.settings, self.clock()
        figures: dict[str, Any] = {}
        if self.prometheus is not None:
            elapsed = max(15.0, now - served_at)
            baseline = max(MIN_BASELINE_S, elapsed)
            try:
                new_rate, new_n = self._error_rate(model, new, elapsed, now)
                old_rate, _ = self._error_rate(model, old, baseline, served_at)
            except (requests.RequestException, KeyError, ValueError) as exc:
                log.warning("watch of %s v%s: Prometheus unavailable (%s)", model, new, exc)
            else:
                figures |= {
                    "new_error_rate": new_rate,
                    "new_requests": new_n,
                    "previous_error_rate": old_rate,
                }
                if (
                    new_rate is not None
                    and new_n >= s.watch.min_requests
                    and new_rate - (old_rate or 0.0) > s.watch.max_error_rate_increase
                ):
                    return (
                        f"error rate {new_rate:.1%} over {new_n:.0f} requests vs {old_rate or 0.0:.1%} for "
                        f"v{old} (allowed increase {s.watch.max_error_rate_increase:.1%})",
                        figures,
                    )
        if not s.monitoring.db_uri:
            return None, figures
        start = datetime.fromtimestamp(served_at, UTC)
        new_n, new_rmse = version_rmse(
            s.monitoring.db_uri, model, new, start, datetime.fromtimestamp(now, UTC)
        )
        lookback = timedelta(seconds=max(MIN_BASELINE_S, now - served_at))
        old_n, old_rmse = version_rmse(s.monitoring.db_uri, model, old, start - lookback, start)
        figures |= {"new_live_rmse": new_rmse, "new_labelled": new_n, "previous_live_rmse": old_rmse}
        if (
            new_rmse is not None
            and old_rmse is not None
            and min(new_n, old_n) >= s.watch.min_labelled
            and new_rmse > old_rmse * s.watch.max_rmse_ratio
        ):
            return (
                f"live RMSE {new_rmse:.4f} over {new_n} labelled rows vs {old_rmse:.4f} for v{old} "
                f"(allowed ratio {s.watch.max_rmse_ratio})",
                figures,
            )
        return None, figures

    def _error_rate(self, model: str, version: str, window_s: float, at: float) -> tuple[float | None, float]:
        assert self.prometheus is not None
        w = int(window_s)
        total = self.prometheus.scalar(REQUESTS.format(m=model, v=version, w=w), at) or 0.0
        errors = self.prometheus.scalar(ERRORS.format(m=model, v=version, w=w), at) or 0.0
        return (errors / total if total else None), total

    def rollback(self, model: str, bad: str, to: str, reason: str, kind: str) -> bool:
        """Move `production` from `bad` back to `to`, if it still names `bad`; record why on `bad`."""
        current = version_by_alias(self.client, model, PRODUCTION)
        if current is None or str(current.version) != bad:
            log.warning("not rolling back %s: production is no longer v%s", model, bad)
            return False
        self.client.set_registered_model_alias(model, PRODUCTION, to)
        when = datetime.now(UTC).isoformat(timespec="seconds")
        for key, value in {
            "rollback.reason": reason,
            "rollback.kind": kind,
            "rollback.to_version": to,
            "rollback.at": when,
        }.items():
            self.client.set_model_version_tag(model, bad, key, value)
        description = (self.client.get_model_version(model, bad).description or "").strip()
        note = f"Rolled back to v{to} at {when} ({kind}): {reason}."
        self.client.update_model_version(model, bad, description=f"{description}\n\n{note}".strip())
        self.metrics.rollbacks.labels(model, kind).inc()
        log.warning("rolled back %s from v%s to v%s: %s", model, bad, to, reason)
        return True
