"""Reference profiles and drift statistics, shared by the trainer (which writes a profile with each
model version) and the monitor (which compares the prediction log's recent rows with it).

A profile summarises the training data: for numeric features, decile bin edges with the share of
rows per bin plus a bounded random sample (for the KS test); for categorical features, category
shares; the same for the model's predictions. Drift is PSI per feature (numeric and categorical)
and the two-sample Kolmogorov-Smirnov statistic for numeric features and predictions.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from contracts.schema import FEATURES

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

PROFILE_VERSION = 1
PROFILE_ARTIFACT = "profile/reference_profile.json"
N_BINS = 10
SAMPLE_SIZE = 1000
EPSILON = 1e-4  # floor for empty bins, so PSI stays finite


def _numeric_summary(values: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    values = np.asarray(values, dtype=float)
    inner = np.unique(np.quantile(values, np.linspace(0, 1, N_BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(inner) + 1)
    sample = rng.choice(values, size=min(SAMPLE_SIZE, len(values)), replace=False)
    return {
        "edges": inner.tolist(),
        "proportions": (counts / counts.sum()).tolist(),
        "sample": np.sort(sample).tolist(),
        "mean": float(values.mean()),
    }


def build_profile(frame: Any, predictions: Iterable[float], seed: int = 0) -> dict[str, Any]:
    """The reference profile of a training frame (schema columns) and the model's predictions."""
    rng = np.random.default_rng(seed)
    profile: dict[str, Any] = {
        "version": PROFILE_VERSION,
        "n_rows": len(frame),
        "numeric": {},
        "categorical": {},
    }
    for feature in FEATURES:
        column = frame[feature.name]
        if feature.is_numeric:
            profile["numeric"][feature.name] = _numeric_summary(column.to_numpy(), rng)
        else:
            shares = column.astype(str).value_counts(normalize=True)
            profile["categorical"][feature.name] = {c: float(shares.get(c, 0.0)) for c in feature.categories}
    profile["prediction"] = _numeric_summary(np.asarray(list(predictions), dtype=float), rng)
    return profile


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two share vectors over the same bins."""
    e = np.clip(np.asarray(expected, dtype=float), EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=float), EPSILON, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_psi(summary: Mapping[str, Any], values: np.ndarray) -> float:
    edges = np.asarray(summary["edges"], dtype=float)
    counts = np.bincount(
        np.searchsorted(edges, np.asarray(values, dtype=float), side="right"), minlength=len(edges) + 1
    )
    return psi(np.asarray(summary["proportions"]), counts / max(counts.sum(), 1))


def categorical_psi(shares: Mapping[str, float], values: Iterable[str]) -> float:
    observed = list(values)
    categories = list(shares)
    counts = np.array(
        [sum(1 for v in observed if v == c) for c in categories]
        + [sum(1 for v in observed if v not in shares)]
    )
    expected = np.array([shares[c] for c in categories] + [0.0])
    return psi(expected, counts / max(counts.sum(), 1))


def ks_statistic(summary: Mapping[str, Any], values: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic between the reference sample and `values`."""
    reference, observed = np.asarray(summary["sample"], dtype=float), np.asarray(values, dtype=float)
    # The statistic is all we report; the asymptotic method skips the exact p-value's cost.
    return float(stats.ks_2samp(reference, observed, method="asymp").statistic)


@dataclass
class DriftReport:
    """Drift of one window of requests against a reference profile."""

    psi: dict[str, float] = field(default_factory=dict)
    ks: dict[str, float] = field(default_factory=dict)
    prediction_psi: float | None = None
    prediction_ks: float | None = None
    drifted: list[str] = field(default_factory=list)

    @property
    def drifted_share(self) -> float:
        return len(self.drifted) / max(len(self.psi), 1)


def drift_report(
    profile: Mapping[str, Any],
    rows: Mapping[str, Iterable[Any]],
    predictions: Iterable[float] | None = None,
    psi_threshold: float = 0.2,
) -> DriftReport:
    """Compare a window (`rows`: feature name -> values) with the profile.

    A feature counts as drifted when its PSI exceeds `psi_threshold` (0.1 is a moderate shift,
    0.2 a significant one, in the usual reading of PSI).
    """
    report = DriftReport()
    for name, summary in profile["numeric"].items():
        values = np.asarray(list(rows[name]), dtype=float)
        report.psi[name] = numeric_psi(summary, values)
        report.ks[name] = ks_statistic(summary, values)
    for name, shares in profile["categorical"].items():
        report.psi[name] = categorical_psi(shares, (str(v) for v in rows[name]))
    report.drifted = sorted(name for name, value in report.psi.items() if value > psi_threshold)
    if predictions is not None:
        values = np.asarray(list(predictions), dtype=float)
        if len(values):
            report.prediction_psi = numeric_psi(profile["prediction"], values)
            report.prediction_ks = ks_statistic(profile["prediction"], values)
    return report


def load_profile(client: MlflowClient, run_id: str) -> dict[str, Any] | None:
    """The run's reference profile (PROFILE_ARTIFACT), or None when the run has none (a connection
    error raises)."""
    folder = str(Path(PROFILE_ARTIFACT).parent)
    if PROFILE_ARTIFACT not in {a.path for a in client.list_artifacts(run_id, folder)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, PROFILE_ARTIFACT, tmp)
        profile: dict[str, Any] = json.loads(Path(path).read_text())
    return profile
