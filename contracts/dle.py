"""Direct loss estimation (DLE): a model's expected error on live traffic, without labels.

At training time a second model, the loss estimator, learns each prediction's absolute and squared
error from the inputs and the prediction, on held-out rows the model did not train on (the trainer's
validation split). On live traffic the monitor asks it for every row of the drift window: the mean of
the estimated absolute errors is the estimated MAE, the square root of the mean estimated squared
error the estimated RMSE. This is NannyML's DLE, fitted with scikit-learn and stored as ONNX
(docs/monitoring.md, "Estimated quality (DLE)", which also records why not the nannyml package).

The artifact, logged on each candidate's run: `estimator/loss_estimator.json` (the manifest: the
column order and its validation figures) and one ONNX graph per loss. ONNX because the monitor loads
it: no pickle, and onnxruntime is in every image that needs it.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contracts.schema import FEATURES

if TYPE_CHECKING:
    import onnxruntime
    from mlflow.tracking import MlflowClient

ESTIMATOR_VERSION = 1
FOLDER = "estimator"
MANIFEST = f"{FOLDER}/loss_estimator.json"
LOSSES = ("absolute_error", "squared_error")
# The estimator's own settings: about 2.4 CPU-seconds for both losses on 3,000 rows, conversion
# to ONNX included (measured warm, one core).
# GradientBoostingRegressor, not HistGradientBoostingRegressor: skl2onnx 1.20 fails to convert the
# latter with scikit-learn 1.9 (a boolean in an integer attribute of its tree node).
PARAMS: dict[str, Any] = {
    "n_estimators": 150,
    "max_depth": 3,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "min_samples_leaf": 20,
}
# ai.onnx.ml 3: the tree operator skl2onnx emits (as for the served models, trainer/compiled.py).
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}


def columns() -> list[str]:
    """The estimator's input columns: numeric features as they are, one indicator per category,
    and the model's prediction last."""
    names: list[str] = []
    for feature in FEATURES:
        names += [feature.name] if feature.is_numeric else [f"{feature.name}={c}" for c in feature.categories]
    return [*names, "prediction"]


def design_matrix(rows: Sequence[Mapping[str, Any]], predictions: Iterable[float]) -> np.ndarray:
    """The estimator's float32 input for rows (feature name -> value) and their predictions. A
    category the schema does not know sets no indicator; a missing or non-numeric value raises."""
    predicted = np.asarray(list(predictions), dtype=np.float64)
    if len(predicted) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(predicted)} predictions")
    blocks: list[np.ndarray] = []
    for feature in FEATURES:
        values = [row[feature.name] for row in rows]
        if feature.is_numeric:
            blocks.append(np.asarray(values, dtype=np.float64)[:, None])
        else:
            text = np.asarray([str(v) for v in values], dtype=object)
            blocks.append(np.stack([text == c for c in feature.categories], axis=1).astype(np.float64))
    blocks.append(predicted[:, None])
    return np.hstack(blocks).astype(np.float32) if rows else np.empty((0, len(columns())), np.float32)


def frame_rows(frame: Any) -> list[dict[str, Any]]:
    """A pandas frame's feature columns as row dicts (what the prediction log holds)."""
    return frame[[f.name for f in FEATURES]].to_dict(orient="records")  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Estimate:
    """Estimated quality over a window of `rows` predictions."""

    rows: int
    mae: float
    rmse: float


def estimate_from(absolute: np.ndarray, squared: np.ndarray) -> Estimate:
    """The window's estimate from per-row estimated losses (negative estimates count as 0)."""
    if len(absolute) == 0:
        raise ValueError("no rows to estimate")
    mae = float(np.clip(absolute, 0, None).mean())
    rmse = math.sqrt(float(np.clip(squared, 0, None).mean()))
    return Estimate(len(absolute), mae, rmse)


@dataclass
class FittedEstimator:
    """The fitted loss estimator: one regressor per loss, with its validation figures."""

    models: dict[str, Any]
    validation: dict[str, float] = field(default_factory=dict)

    def losses(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {loss: np.asarray(model.predict(x), dtype=np.float64) for loss, model in self.models.items()}

    def estimate(self, x: np.ndarray) -> Estimate:
        losses = self.losses(x)
        return estimate_from(losses["absolute_error"], losses["squared_error"])


def fit(x: np.ndarray, actual: np.ndarray, predicted: np.ndarray, seed: int = 0) -> FittedEstimator:
    """Fit the estimator on held-out rows: `x` (design_matrix), the true and the predicted values."""
    from sklearn.ensemble import GradientBoostingRegressor

    error = np.asarray(actual, dtype=np.float64) - np.asarray(predicted, dtype=np.float64)
    targets = {"absolute_error": np.abs(error), "squared_error": error**2}
    models = {
        loss: GradientBoostingRegressor(**PARAMS, random_state=seed).fit(x, target)
        for loss, target in targets.items()
    }
    return FittedEstimator(models)


def validate(
    estimator: FittedEstimator, x: np.ndarray, actual: np.ndarray, predicted: np.ndarray
) -> dict[str, float]:
    """How well the estimator estimates MAE and RMSE on rows it did not see: the run metrics
    `dle_val_*` (estimated, measured and the relative error of each)."""
    error = np.asarray(actual, dtype=np.float64) - np.asarray(predicted, dtype=np.float64)
    measured_mae, measured_rmse = float(np.abs(error).mean()), float(np.sqrt((error**2).mean()))
    estimate = estimator.estimate(x)
    figures = {
        "dle_val_rows": float(len(error)),
        "dle_val_estimated_mae": estimate.mae,
        "dle_val_measured_mae": measured_mae,
        "dle_val_estimated_rmse": estimate.rmse,
        "dle_val_measured_rmse": measured_rmse,
        "dle_val_mae_relative_error": abs(estimate.mae - measured_mae) / max(measured_mae, 1e-12),
        "dle_val_rmse_relative_error": abs(estimate.rmse - measured_rmse) / max(measured_rmse, 1e-12),
    }
    estimator.validation = figures
    return figures


def save(estimator: FittedEstimator, folder: Path) -> None:
    """Write the manifest and one ONNX graph per loss into `folder` (logged as FOLDER)."""
    import skl2onnx
    from skl2onnx.common.data_types import FloatTensorType

    folder.mkdir(parents=True, exist_ok=True)
    width = len(columns())
    for loss, model in estimator.models.items():
        graph = skl2onnx.to_onnx(
            model, initial_types=[("x", FloatTensorType([None, width]))], target_opset=TARGET_OPSET
        )
        (folder / f"{loss}.onnx").write_bytes(graph.SerializeToString())
    manifest = {
        "version": ESTIMATOR_VERSION,
        "columns": columns(),
        "losses": {loss: f"{loss}.onnx" for loss in estimator.models},
        "params": PARAMS,
        "validation": estimator.validation,
    }
    (folder / Path(MANIFEST).name).write_text(json.dumps(manifest, indent=2))


class LossEstimator:
    """A logged estimator loaded for inference (ONNX Runtime, one thread)."""

    def __init__(
        self, manifest: Mapping[str, Any], sessions: Mapping[str, onnxruntime.InferenceSession]
    ) -> None:
        if manifest.get("version") != ESTIMATOR_VERSION:
            raise ValueError(
                f"loss estimator version {manifest.get('version')!r}, this code reads {ESTIMATOR_VERSION}"
            )
        if list(manifest.get("columns", [])) != columns():
            raise ValueError("loss estimator columns differ from the feature schema's")
        missing = set(LOSSES) - set(sessions)
        if missing:
            raise ValueError(f"loss estimator lacks {', '.join(sorted(missing))}")
        self.manifest, self.sessions = dict(manifest), dict(sessions)

    @classmethod
    def from_folder(cls, folder: Path) -> LossEstimator:
        import onnxruntime

        manifest = json.loads((folder / Path(MANIFEST).name).read_text())
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        sessions = {
            loss: onnxruntime.InferenceSession(
                str(folder / Path(str(name)).name), options, providers=["CPUExecutionProvider"]
            )
            for loss, name in manifest.get("losses", {}).items()
        }
        return cls(manifest, sessions)

    def estimate(self, rows: Sequence[Mapping[str, Any]], predictions: Iterable[float]) -> Estimate:
        """Estimated MAE and RMSE of a window of rows and their predictions."""
        x = design_matrix(rows, predictions)
        losses = {loss: np.ravel(session.run(None, {"x": x})[0]) for loss, session in self.sessions.items()}
        return estimate_from(losses["absolute_error"], losses["squared_error"])


def load(client: MlflowClient, run_id: str) -> LossEstimator | None:
    """The run's loss estimator, or None when the run has none (a connection error raises)."""
    if MANIFEST not in {a.path for a in client.list_artifacts(run_id, FOLDER)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(client.download_artifacts(run_id, FOLDER, tmp))
        return LossEstimator.from_folder(path)
