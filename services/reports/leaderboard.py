"""The leaderboard: per target, each participant's best candidate (chosen on validation RMSE, as the
trainer chooses, and ranked by test RMSE), what it cost,
how many candidate runs they made and when the last one ran; with its registered version if any."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mlflow.tracking import MlflowClient

from contracts import reports as names
from services.reports.collect import (
    best_candidate,
    experiment_runs,
    participant_experiments,
    registry_history,
)


@dataclass(frozen=True)
class Entry:
    participant: str
    target: str
    model: str
    run_id: str
    version: str | None
    test_mae: float | None
    test_rmse: float
    test_r2: float | None
    cpu_seconds: float | None
    peak_memory_mb: float | None
    fit_seconds: float | None
    runs: int
    last_run_ms: int
    report: str

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def read_leaderboard(client: MlflowClient) -> dict[str, list[Entry]]:
    """target -> entries, best first."""
    by_run = {v.run_id: v.version for versions in registry_history(client).values() for v in versions}
    board: dict[str, list[Entry]] = {}
    for experiment in participant_experiments(client):
        _, candidates = experiment_runs(client, experiment)
        for target in sorted({c.target for c in candidates}):
            mine = [c for c in candidates if c.target == target]
            best = best_candidate(mine)
            if best is None:
                continue
            board.setdefault(target, []).append(
                Entry(
                    experiment.name,
                    target,
                    best.model,
                    best.run_id,
                    by_run.get(best.run_id),
                    best.metric("test_mae"),
                    best.metrics["test_rmse"],
                    best.metric("test_r2"),
                    best.metric(names.CPU_SECONDS),
                    best.metric(names.PEAK_RSS_MB),
                    best.metric(names.FIT_SECONDS),
                    len(mine),
                    max(c.end_ms or c.start_ms for c in mine),
                    names.report_path(experiment.name),
                )
            )
    return {t: sorted(entries, key=lambda e: e.test_rmse) for t, entries in sorted(board.items())}
