"""The one promotion gate (champion/challenger): does the candidate replace production?

Both models are scored with `mlflow.models.evaluate` (regressor metrics) on the same data:
- `window`: recent labelled production traffic, held out from training (retraining only);
- `test`: the fixed test set of the reference data;
- `reference`: the fixed reference set (`contracts.synthetic.reference_set`), which no feedback and
  no training set reaches.

The rules, applied with MLflow's `validate_evaluation_results` (its `MetricThreshold` semantics):
- no production version yet: promote;
- with a window of at least `min_labelled_rows`: the candidate's window RMSE must beat the
  champion's by `min_relative_improvement` (strictly, when that is 0), and its test RMSE may be at most
  `max_test_regression` (relative) worse than the champion's;
- with a window too small to judge: keep production;
- without a window (a manual `make train`): the candidate's test RMSE must beat the champion's by
  `min_relative_improvement` (strictly, when 0): the platform's original rule is this case;
- and always, besides the champion: the candidate's reference RMSE may be at most
  `max_reference_regression` (relative) above the model's reference baseline, the reference RMSE of
  its first production version, recorded once on the registered model and never moved by a later
  promotion (trainer/register.py). The champion rules are relative to the version before, so
  feedback that feeds both the training and the window could walk quality down a step per cycle;
  this bound is absolute, so poisoned feedback can stop promotions but not ratchet quality down.

The decision, every set of scores, the baseline, the thresholds and the rules that refused
(`promotion.refused_by`: window_rows, champion, reference) become tags on the version and on the
session run (`promotion.*`), so every promotion can be traced from the MLflow UI.
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

WINDOW, TEST, REFERENCE = "window", "test", "reference"
# The rules that can refuse (`Decision.refused_by`).
WINDOW_ROWS, CHAMPION, REFERENCE_BOUND = "window_rows", "champion", "reference"
RMSE, MAE, R2, ROWS = "root_mean_squared_error", "mean_absolute_error", "r2_score", "example_count"
# `MetricThreshold` needs a positive change to compare at all: this makes "better" strict.
STRICTLY = 1e-12


@dataclass(frozen=True)
class Thresholds:
    """The gate's settings (trainer flags; the orchestrator passes its GATE_* settings)."""

    min_relative_improvement: float = 0.0
    min_labelled_rows: int = 100
    max_test_regression: float = 0.05
    max_reference_regression: float = 0.10

    def __post_init__(self) -> None:
        if not 0 <= self.min_relative_improvement < 1:
            raise ValueError(
                f"min_relative_improvement must be in [0, 1), got {self.min_relative_improvement}"
            )
        if self.min_labelled_rows < 1:
            raise ValueError(f"min_labelled_rows must be at least 1, got {self.min_labelled_rows}")
        if self.max_test_regression < 0:
            raise ValueError(f"max_test_regression must be >= 0, got {self.max_test_regression}")
        if self.max_reference_regression < 0:
            raise ValueError(f"max_reference_regression must be >= 0, got {self.max_reference_regression}")


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
    # The reference RMSE the bound is relative to: the model's recorded baseline, else the
    # champion's (no baseline recorded yet), else the candidate's (the first production version).
    reference_baseline: float | None = None
    refused_by: tuple[str, ...] = ()  # the rules that refused: WINDOW_ROWS, CHAMPION, REFERENCE_BOUND

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
            "promotion.refused_by": ",".join(self.refused_by),
        }
        if self.reference_baseline is not None:
            tags["promotion.reference_baseline_rmse"] = f"{self.reference_baseline:.6f}"
        for data_set in (TEST, WINDOW, REFERENCE):
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
    reference_baseline: float | None = None,
) -> Decision:
    """Apply the rules in this module's docstring to scores from `evaluate_model`;
    `reference_baseline` is the model's recorded one (`register.reference_baseline`), if any."""
    thresholds = thresholds or Thresholds()
    if reference_baseline is None and REFERENCE in candidate:
        reference_baseline = (champion or candidate).get(REFERENCE, {}).get(RMSE)

    def verdict(reason: str, refused_by: tuple[str, ...] = ()) -> Decision:
        return Decision(
            not refused_by, reason, candidate, champion, champion_version, thresholds, trigger,
            approval_required, reference_baseline, refused_by,
        )  # fmt: skip

    if champion is None:
        return verdict("no production version yet")
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
                f"the production window has {rows} labelled rows, fewer than the "
                f"{thresholds.min_labelled_rows} the gate needs to judge; production kept",
                (WINDOW_ROWS,),
            )
        checks = [
            (WINDOW, {RMSE: better}, champion[WINDOW]),
            (TEST, {RMSE: _at_most(champion[TEST][RMSE] * (1 + thresholds.max_test_regression))}, None),
        ]
    else:
        checks = [(TEST, {RMSE: better}, champion[TEST])]
    failures = [failure for check in checks if (failure := _failure(candidate, *check))]
    refused_by: tuple[str, ...] = ()
    problems = []
    if failures:
        refused_by, problems = (CHAMPION,), [f"not better: {' | '.join(failures)}"]
    if REFERENCE in candidate and reference_baseline is not None:
        bound = reference_baseline * (1 + thresholds.max_reference_regression)
        if _failure(candidate, REFERENCE, {RMSE: _at_most(bound)}, None):
            refused_by += (REFERENCE_BOUND,)
            problems.append(
                f"over the reference bound: reference RMSE {candidate[REFERENCE][RMSE]:.4f} > {bound:.4f} "
                f"(baseline {reference_baseline:.4f} + {thresholds.max_reference_regression:.0%})"
            )
    summary = _summary(candidate, champion, against, thresholds, reference_baseline)
    return verdict(f"{summary}; {'; '.join(problems) if problems else 'better'}", refused_by)


def _failure(
    candidate: Scores, data_set: str, rule: dict[str, MetricThreshold], baseline: dict[str, float] | None
) -> str:
    """Why the candidate's scores on `data_set` fail `rule` (MLflow's words), or "" when they pass."""
    try:
        mlflow.validate_evaluation_results(
            rule,
            EvaluationResult(candidate[data_set], {}),
            EvaluationResult(baseline, {}) if baseline is not None else None,
        )
    except ModelValidationFailedException as exc:
        return f"{data_set}: {' '.join(str(exc.message).split())}"
    return ""


def _at_most(value: float) -> MetricThreshold:
    return MetricThreshold(threshold=value, greater_is_better=False)


def _summary(
    candidate: Scores, champion: Scores, against: str, thresholds: Thresholds, baseline: float | None
) -> str:
    parts = []
    for data_set, label in ((WINDOW, "production-window"), (TEST, "test")):
        if data_set in candidate:
            new, old = candidate[data_set][RMSE], champion[data_set][RMSE]
            change = (new - old) / abs(old) * 100 if old else float("inf")
            parts.append(f"{label} RMSE {new:.4f} vs {against} {old:.4f} ({change:+.1f}%)")
    if REFERENCE in candidate and baseline is not None:
        new = candidate[REFERENCE][RMSE]
        change = (new - baseline) / abs(baseline) * 100 if baseline else float("inf")
        parts.append(f"reference RMSE {new:.4f} vs baseline {baseline:.4f} ({change:+.1f}%)")
    limits = f"needs {thresholds.min_relative_improvement:.0%} improvement" + (
        f", test regression at most {thresholds.max_test_regression:.0%}" if WINDOW in candidate else ""
    )
    if REFERENCE in candidate:
        limits += f", reference at most {thresholds.max_reference_regression:.0%} over the baseline"
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
