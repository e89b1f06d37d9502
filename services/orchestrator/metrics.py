"""The orchestrator's Prometheus metrics (names and labels: docs/monitoring.md, "Orchestrator")."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class OrchestratorMetrics:
    registry: CollectorRegistry
    triggers: Counter
    retrainings: Counter
    duration: Histogram
    stage: Histogram
    last_success: Gauge
    in_progress: Gauge
    rollbacks: Counter
    watches: Counter

    @classmethod
    def create(cls) -> OrchestratorMetrics:
        r = CollectorRegistry()
        return cls(
            registry=r,
            triggers=Counter(
                "orchestrator_triggers_total",
                "Retraining triggers received, by what became of them (started, busy, cooldown, ignored).",
                ["model", "trigger", "result"],
                registry=r,
            ),
            retrainings=Counter(
                "orchestrator_retrainings_total",
                "Retrainings finished, by trigger and outcome (promoted, kept, skipped, failed).",
                ["model", "trigger", "outcome"],
                registry=r,
            ),
            duration=Histogram(
                "orchestrator_retraining_duration_seconds",
                "From trigger to the gate's decision.",
                ["model"],
                buckets=(15, 30, 60, 90, 120, 180, 300, 600, 1200, 1800),
                registry=r,
            ),
            stage=Histogram(
                "orchestrator_stage_duration_seconds",
                "Time spent per stage of a retraining (data, training, rollout).",
                ["model", "stage"],
                buckets=(1, 5, 15, 30, 60, 120, 300, 600),
                registry=r,
            ),
            last_success=Gauge(
                "orchestrator_last_success_timestamp_seconds",
                "When a retraining of the model last finished with a decision (promoted or kept).",
                ["model"],
                registry=r,
            ),
            in_progress=Gauge(
                "orchestrator_busy",
                "1 while the model is being retrained (stage=retraining) or watched (stage=watching).",
                ["model", "stage"],
                registry=r,
            ),
            rollbacks=Counter(
                "orchestrator_rollbacks_total",
                "Production aliases moved back, by reason (error_rate, live_rmse, rollout_failed, manual).",
                ["model", "reason"],
                registry=r,
            ),
            watches=Counter(
                "orchestrator_watches_total",
                "Rollout watches finished, by outcome (passed, rolled_back, superseded, inconclusive).",
                ["model", "outcome"],
                registry=r,
            ),
        )

    def initialise(self, models: list[str]) -> None:
        """Export every model's series from the start, so dashboards and rules see zeros, not gaps."""
        for model in models:
            for stage in ("retraining", "watching"):
                self.in_progress.labels(model, stage).set(0)
            # Histograms too: a rate over the first observation needs the zero before it.
            self.duration.labels(model)
            for stage in ("data", "training", "rollout"):
                self.stage.labels(model, stage)
            for reason in ("error_rate", "live_rmse", "rollout_failed", "manual"):
                self.rollbacks.labels(model, reason)
