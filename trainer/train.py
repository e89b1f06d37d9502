"""A training session: every candidate for every target as a nested run, the best one registered."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import mlflow.sklearn
import pandas as pd
import requests
import sklearn
import skops.io
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.base import RegressorMixin
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from tenacity import RetryError, retry, stop_after_attempt, wait_exponential

from contracts import drift, synthetic
from contracts.models import MODELS, PRODUCTION, model_for_target
from contracts.registry import version_by_alias
from contracts.schema import FEATURE_NAMES, TARGETS
from trainer import data, evaluate, register
from trainer.config import Settings
from trainer.features import build_preprocessor, preprocessor_params
from trainer.resources import ResourceMeter

log = logging.getLogger(__name__)

# Tree models are saved with skops (safe loading); these are the types their files contain.
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


def build_candidate(key: str, seed: int) -> tuple[RegressorMixin, dict[str, object]]:
    """A regressor and its hyperparameters, by short name: lr, rf or gbr."""
    if key == "lr":
        return LinearRegression(), {"model": "lr", "fit_intercept": True}
    if key == "rf":
        forest: dict[str, int] = {"n_estimators": 100, "max_depth": 12, "min_samples_leaf": 2}
        return RandomForestRegressor(**forest, n_jobs=-1, random_state=seed), {"model": "rf", **forest}
    if key == "gbr":
        boosting = {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.8}
        return GradientBoostingRegressor(**boosting, random_state=seed), {"model": "gbr", **boosting}  # type: ignore[arg-type]
    raise ValueError(f"unknown model {key!r}: choose from {', '.join(CANDIDATES)}")


CANDIDATES = ("lr", "rf", "gbr")


@dataclass
class Options:
    """What one session trains on; the CLI fills it."""

    n_rows: int = 20000
    seed: int = 42
    models: tuple[str, ...] = CANDIDATES
    targets: tuple[str, ...] = tuple(m.target for m in MODELS)
    data_csv: Path | None = None
    drift: float = 0.0
    register: bool = True


@dataclass
class TargetResult:
    target: str
    best_model: str
    best_run_id: str
    test_rmse: dict[str, float]
    version: str | None = None
    promoted: bool | None = None


@dataclass
class SessionResult:
    parent_run_id: str
    experiment_name: str
    results: list[TargetResult] = field(default_factory=list)


class TrackingUnavailable(RuntimeError):
    """The tracking server did not answer within the retry budget."""


def wait_for_tracking_server(settings: Settings) -> None:
    """Poll /health with exponential backoff; raise TrackingUnavailable when the budget runs out."""
    uri = settings.tracking_uri.rstrip("/")
    if not uri.startswith("http"):
        return  # a local store (file or database URI) needs no server

    @retry(
        stop=stop_after_attempt(settings.connect_attempts),
        wait=wait_exponential(multiplier=0.5, max=settings.connect_max_wait_s),
        reraise=False,
    )
    def ping() -> None:
        log.info("checking tracking server %s", uri)
        requests.get(f"{uri}/health", timeout=5).raise_for_status()

    try:
        ping()
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        raise TrackingUnavailable(
            f"tracking server {uri} unreachable after {settings.connect_attempts} attempts "
            f"({type(cause).__name__}: {cause}); is it running? (make up, or make local)"
        ) from None


def production_exists(settings: Settings, targets: tuple[str, ...]) -> bool:
    """True when every target's registered model has a production alias."""
    client = MlflowClient(settings.tracking_uri)
    return all(version_by_alias(client, model_for_target(t).name, PRODUCTION) for t in targets)


def load_data(options: Options) -> tuple[pd.DataFrame, str]:
    """The dataset and a short description of where it came from."""
    if options.data_csv is not None:
        return data.load_csv(options.data_csv), f"csv:{options.data_csv.name}"
    df = synthetic.generate(options.n_rows, seed=options.seed, drift=options.drift)
    return df, f"synthetic:seed={options.seed},drift={options.drift}"


def _log_candidate(
    key: str,
    target: str,
    frames: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    dataset: mlflow.data.dataset.Dataset,
    common: dict[str, object],
    tags: dict[str, str],
) -> tuple[str, str, dict[str, float]]:
    """Fit one candidate in its own nested run; return (run id, model uri, metrics)."""
    train, val, test = frames
    estimator, hyper = build_candidate(key, int(str(common["seed"])))
    model = Pipeline([("preprocess", build_preprocessor()), ("model", estimator)])
    x_train, y_train = train[list(FEATURE_NAMES)], train[target]
    with mlflow.start_run(run_name=f"{key}-{target}", nested=True, tags=tags, log_system_metrics=True) as run:
        mlflow.log_input(dataset, context="training")
        meter = ResourceMeter().start()
        started = time.perf_counter()
        model.fit(x_train, y_train)
        fit_seconds = time.perf_counter() - started
        if "n_jobs" in estimator.get_params():
            # Fit on every core; predict single rows on one: joblib's thread pool costs tens of
            # milliseconds per call, far more than a small forest's prediction itself.
            model.set_params(model__n_jobs=1)
        metrics = {"fit_seconds": fit_seconds}
        for prefix, frame in (("val", val), ("test", test)):
            metrics |= evaluate.regression_metrics(
                frame[target].to_numpy(), model.predict(frame[list(FEATURE_NAMES)]), prefix
            )
        mlflow.log_params({**common, **hyper, "target": target, **preprocessor_params()})
        mlflow.log_metrics(metrics | meter.metrics())

        x_test, y_test = test[list(FEATURE_NAMES)], test[target].to_numpy()
        predictions = model.predict(x_test)
        title = f"{key} - {target}"
        mlflow.log_figure(
            evaluate.predicted_vs_actual(y_test, predictions, title), "plots/predicted_vs_actual.png"
        )
        mlflow.log_figure(evaluate.residuals(y_test, predictions, title), "plots/residuals.png")
        importance = evaluate.feature_importance(model, title)
        if importance is not None:
            mlflow.log_figure(importance, "plots/feature_importance.png")
        evaluate.close_figures()

        # The reference the gateway compares live traffic with (drift detection).
        profile = drift.build_profile(x_train, model.predict(x_train), seed=int(str(common["seed"])))
        mlflow.log_dict(profile, drift.PROFILE_ARTIFACT)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "preprocessor.skops"
            skops.io.dump(model[0], path)
            mlflow.log_artifact(str(path), "preprocessor")
        example = x_train.head(5)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example, model.predict(example)),
            input_example=example,
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=_pip_requirements(),
        )
    return run.info.run_id, info.model_uri, metrics


def _pip_requirements() -> list[str]:
    """Exact runtime pins for logged models (avoids MLflow's slow requirement inference)."""
    import numpy

    return [
        f"mlflow=={mlflow.__version__}",
        f"scikit-learn=={sklearn.__version__}",
        f"skops=={skops.__version__}",
        f"numpy=={numpy.__version__}",
        f"pandas=={pd.__version__}",
    ]


def run_session(settings: Settings, options: Options) -> SessionResult:
    """Train every candidate for every target, register the best, promote it if it is better."""
    for key in options.models:
        build_candidate(key, options.seed)  # fail on a typo before any run is created
    unknown = [t for t in options.targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"unknown target(s) {unknown}: choose from {', '.join(TARGETS)}")

    df, source = load_data(options)
    train, val, test = data.split(df, options.seed)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_system_metrics_sampling_interval(settings.system_metrics_interval_s)  # type: ignore[arg-type]
    mlflow.set_system_metrics_samples_before_logging(1)
    client = MlflowClient(settings.tracking_uri)
    project_run = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`: log into its experiment
    if project_run:
        experiment = client.get_experiment(client.get_run(project_run).info.experiment_id)
    else:
        experiment = mlflow.set_experiment(settings.participant)
    tags = {
        "participant": settings.participant,
        "git_commit": settings.git_commit,
        "platform_version": settings.platform_version,
        "data_source": source,
    }
    common = {
        "n_rows": len(df),
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "seed": options.seed,
        "data_source": source,
    }
    dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
        df,
        source=str(options.data_csv.resolve()) if options.data_csv else None,
        name=f"network-telemetry ({source})",
    )
    with mlflow.start_run(run_name=f"session-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags) as parent:
        mlflow.log_params(
            {**common, "models": ",".join(options.models), "targets": ",".join(options.targets)}
        )
        result = SessionResult(parent.info.run_id, experiment.name)
        for target in options.targets:
            scores: dict[str, tuple[str, str, dict[str, float]]] = {}
            for key in options.models:
                log.info("training %s for %s on %d rows", key, target, len(train))
                scores[key] = _log_candidate(key, target, (train, val, test), dataset, common, tags)
            best = min(scores, key=lambda k: scores[k][2]["val_rmse"])
            run_id, model_uri, metrics = scores[best]
            outcome = TargetResult(target, best, run_id, {k: s[2]["test_rmse"] for k, s in scores.items()})
            if options.register:
                prod_rmse, prod_version = register.production_rmse(
                    client, model_for_target(target).name, test[list(FEATURE_NAMES)], test[target]
                )
                decision = register.decide(metrics["test_rmse"], prod_rmse, prod_version)
                outcome.version = register.register_and_promote(
                    client,
                    model_for_target(target).name,
                    model_uri,
                    decision,
                    {**tags, "target": target, "model": best, "run_id": run_id},
                )
                outcome.promoted = decision.promote
                log.info("%s v%s: %s", model_for_target(target).name, outcome.version, decision.reason)
            mlflow.log_metrics({f"{target}.best_test_rmse": metrics["test_rmse"]})
            mlflow.set_tag(f"{target}.best_model", best)
            result.results.append(outcome)
    return result
