"""The one promotion gate (champion/challenger): does the candidate replace production?

Both models are scored with `mlflow.models.evaluate` (regressor metrics) on the same data:
- `window`: recent labelled production traffic, held out from training (retraining only);
- `test`: the fixed test set of the reference data.

The rules, applied with MLflow's `validate_evaluation_results` (its `MetricThreshold` semantics):
- no production version yet: promote;
- with a window of at least `min_labelled_rows`: the candidate's window RMSE must beat the
  champion's by `min_relative_improvement` (strictly, when that is 0), and its test RMSE may be at most
  `max_test_regression` (relative) worse than the champion's;
- with a window too small to judge: keep production;
- without a window (a manual `make train`): the candidate's test RMSE must beat the champion's by
  `min_relative_improvement` (strictly, when 0): the platform's original rule is this case.

The decision, both sets of scores and the thresholds become tags on the version and on the session
run (`promotion.*`), so every promotion can be traced from the MLflow UI.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field

import mlflow
import pandas as pd
from mlflow.models import MetricThreshold
from mlflow.models.evaluation import EvaluationResult
from mlflow.models.evaluation.validation import ModelValidationFailedException

log = logging.getLogger(__name__)

WINDOW, TEST = "window", "test"
RMSE, MAE, R2, ROWS = "root_mean_squared_error", "mean_absolute_error", "r2_score", "example_count"
# `MetricThreshold` needs a positive change to compare at all: this makes "better" strict.
STRICTLY = 1e-12


@dataclass(frozen=True)
class Thresholds:
    """The gate's settings (trainer flags; the orchestrator passes its GATE_* settings)."""

    min_relative_improvement: float = 0.0
    min_labelled_rows: int = 100
    max_test_regression: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.min_relative_improvement < 1:
            raise ValueError(
                f"min_relative_improvement must be in [0, 1), got {self.min_relative_improvement}"
            )
        if self.min_labelled_rows < 1:
            raise ValueError(f"min_labelled_rows must be at least 1, got {self.min_labelled_rows}")
        if self.max_test_regression < 0:
            raise ValueError(f"max_test_regression must be >= 0, got {self.max_test_regression}")


Scores = dict[str, dict[str, float]]  # data set (window, test) -> metric -> value


@dataclass(frozen=True)
class Decision:
    """Whether the candidate replaces production, why, and everything that was compared."""

    promote: bool
    reason: str
    candidate: Scores
    champion: Scores | None = None
    champion_version: str | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    trigger: str = "manual"
    # The CI pipeline: a candidate that passes waits for an approved job to move production.
    approval_required: bool = False

    @property
    def moves_production(self) -> bool:
        return self.promote and not self.approval_required

    @property
    def outcome(self) -> str:
        """promoted, awaiting_approval (passed the gate, production waits) or not_promoted."""
        if not self.promote:
            return "not_promoted"
        return "awaiting_approval" if self.approval_required else "promoted"

    def tags(self) -> dict[str, str]:
        """`promotion.*` tags for the model version and the session run."""
        tags = {
            "promotion.decision": self.outcome,
            "promotion.reason": self.reason,
            "promotion.trigger": self.trigger,
            "promotion.compared_with_version": self.champion_version or "",
            "promotion.thresholds": json.dumps(asdict(self.thresholds), sort_keys=True),
        }
        for data_set in (TEST, WINDOW):
            for role, scores in (("candidate", self.candidate), ("production", self.champion)):
                value = (scores or {}).get(data_set, {}).get(RMSE)
                if data_set in self.candidate:
                    tags[f"promotion.{role}_{data_set}_rmse"] = "" if value is None else f"{value:.6f}"
        if WINDOW in self.candidate:
            tags["promotion.window_rows"] = str(int(self.candidate[WINDOW].get(ROWS, 0)))
        return tags


def decide(
    candidate: Scores,
    champion: Scores | None,
    champion_version: str | None = None,
    thresholds: Thresholds | None = None,
    trigger: str = "manual",
    approval_required: bool = False,
) -> Decision:
    """Apply the rules in this module's docstring to scores from `evaluate_model`."""
    thresholds = thresholds or Thresholds()

    def verdict(promote: bool, reason: str) -> Decision:
        return Decision(
            promote, reason, candidate, champion, champion_version, thresholds, trigger, approval_required
        )

    if champion is None:
        return verdict(True, "no production version yet")
    against = f"production v{champion_version}"
    improvement = thresholds.min_relative_improvement
    better = (
        MetricThreshold(min_relative_change=improvement, greater_is_better=False)
        if improvement > 0
        else MetricThreshold(min_absolute_change=STRICTLY, greater_is_better=False)
    )
    if WINDOW in candidate:
        rows = int(candidate[WINDOW].get(ROWS, 0))
        if rows < thresholds.min_labelled_rows:
            return verdict(
                False,
                f"the production window has {rows} labelled rows, fewer than the "
                f"{thresholds.min_labelled_rows} the gate needs to judge; production kept",
            )
        checks = [
            (WINDOW, {RMSE: better}, champion[WINDOW]),
            (TEST, {RMSE: _at_most(champion[TEST][RMSE] * (1 + thresholds.max_test_regression))}, None),
        ]
    else:
        checks = [(TEST, {RMSE: better}, champion[TEST])]
    failures = []
    for data_set, rule, baseline in checks:
        try:
            mlflow.validate_evaluation_results(
                rule,
                EvaluationResult(candidate[data_set], {}),
                EvaluationResult(baseline, {}) if baseline is not None else None,
            )
        except ModelValidationFailedException as exc:
            failures.append(f"{data_set}: {' '.join(str(exc.message).split())}")
    summary = _summary(candidate, champion, against, thresholds)
    if failures:
        return verdict(False, f"{summary}; not better: {' | '.join(failures)}")
    return verdict(True, f"{summary}; better")


def _at_most(value: float) -> MetricThreshold:
    return MetricThreshold(threshold=value, greater_is_better=False)


def _summary(candidate: Scores, champion: Scores, against: str, thresholds: Thresholds) -> str:
    parts = []
    for data_set, label in ((WINDOW, "production-window"), (TEST, "test")):
        if data_set in candidate:
            new, old = candidate[data_set][RMSE], champion[data_set][RMSE]
            change = (new - old) / abs(old) * 100 if old else float("inf")
            parts.append(f"{label} RMSE {new:.4f} vs {against} {old:.4f} ({change:+.1f}%)")
    limits = f"needs {thresholds.min_relative_improvement:.0%} improvement" + (
        f", test regression at most {thresholds.max_test_regression:.0%}" if WINDOW in candidate else ""
    )
    return f"{'; '.join(parts)} ({limits})"


def evaluate_model(model_uri: str, frames: dict[str, pd.DataFrame], target: str, label: str) -> Scores:
    """Score `model_uri` on each data set with `mlflow.models.evaluate`, one nested run each
    (`gate-<label>-<set>`), so the comparison is visible in the MLflow UI."""
    scores: Scores = {}
    for data_set, frame in frames.items():
        with mlflow.start_run(run_name=f"gate-{label}-{data_set}", nested=True, tags={"gate.role": label}):
            result = mlflow.models.evaluate(
                model_uri,
                data=frame,
                targets=target,
                model_type="regressor",
                evaluator_config={"log_model_explainability": False},
            )
        scores[data_set] = {k: float(result.metrics[k]) for k in (RMSE, MAE, R2, ROWS)}
    return scores
