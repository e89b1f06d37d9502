"""Metrics and diagnostic plots for a fitted regressor."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, prefix: str) -> dict[str, float]:
    """MAE, RMSE and R2 named `<prefix>_mae` and so on."""
    return {
        f"{prefix}_mae": float(mean_absolute_error(y_true, y_pred)),
        f"{prefix}_rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        f"{prefix}_r2": float(r2_score(y_true, y_pred)),
    }


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.sqrt(mean_squared_error(y_true, y_pred)))


def predicted_vs_actual(y_true: np.ndarray, y_pred: np.ndarray, title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y_true, y_pred, s=4, alpha=0.4)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=1, label="perfect")
    ax.set(xlabel="actual", ylabel="predicted", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def residuals(y_true: np.ndarray, y_pred: np.ndarray, title: str) -> Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    res = y_true - y_pred
    left.scatter(y_pred, res, s=4, alpha=0.4)
    left.axhline(0, color="black", linewidth=1)
    left.set(xlabel="predicted", ylabel="residual (actual - predicted)", title=title)
    right.hist(res, bins=50)
    right.set(xlabel="residual", ylabel="count", title="residual distribution")
    fig.tight_layout()
    return fig


def feature_importance(model: Pipeline, title: str) -> Figure | None:
    """Impurity importances for tree models, |coefficients| on scaled features for linear ones."""
    estimator = model[-1]
    names = model[0].get_feature_names_out()
    if hasattr(estimator, "feature_importances_"):
        values = np.asarray(estimator.feature_importances_)
        label = "impurity importance"
    elif hasattr(estimator, "coef_"):
        values = np.abs(np.ravel(estimator.coef_))
        label = "|coefficient| (scaled features)"
    else:
        return None
    order = np.argsort(values)[-20:]
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.barh(np.asarray(names)[order], values[order])
    ax.set(xlabel=label, title=title)
    fig.tight_layout()
    return fig


def close_figures() -> None:
    """Free every open figure (matplotlib keeps them until closed)."""
    plt.close("all")
