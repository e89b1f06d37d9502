"""A training session: every candidate for every target as a nested run, the best one registered."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import requests
import sklearn
import skops.io
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.base import RegressorMixin
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from tenacity import RetryError, retry, stop_after_attempt, wait_exponential

from contracts import dle, drift, experiments, reports, synthetic
from contracts.models import MODELS, PRODUCTION, model_for_target
from contracts.registry import version_by_alias
from contracts.schema import FEATURE_NAMES, TARGETS
from trainer import compiled, data, evaluate, gate, register
from trainer.config import Settings
from trainer.features import build_preprocessor, preprocessor_params
from trainer.resources import ResourceMeter

log = logging.getLogger(__name__)

# Tree models are saved with skops (safe loading); these are the types their files contain.
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


# The candidates by the names participants read (run names, the `model` param and tag), and the
# short names the CLI also accepts (`--models rf`).
CANDIDATES = ("linear-regression", "random-forest", "gradient-boosting")
SHORT_NAMES = {"lr": "linear-regression", "rf": "random-forest", "gbr": "gradient-boosting"}


def candidate_name(name: str) -> str:
    """The full name of a candidate given by its full or short name; ValueError for anything else."""
    name = SHORT_NAMES.get(name, name)
    if name not in CANDIDATES:
        choices = ", ".join(f"{full} ({short})" for short, full in SHORT_NAMES.items())
        raise ValueError(f"unknown model {name!r}: choose from {choices}")
    return name


def class_path(obj: object) -> str:
    """Where the object's class is imported from: 'sklearn.ensemble.RandomForestRegressor' (private
    submodules such as `sklearn.ensemble._forest` are left out)."""
    public = []
    for part in type(obj).__module__.split("."):
        if part.startswith("_"):
            break
        public.append(part)
    return ".".join([*public, type(obj).__qualname__])


def build_candidate(name: str, seed: int) -> tuple[RegressorMixin, dict[str, object]]:
    """A regressor and its params (`model`, `estimator_class` and hyperparameters), by full or short name."""
    name = candidate_name(name)
    estimator: RegressorMixin
    hyper: dict[str, object]
    if name == "linear-regression":
        estimator, hyper = LinearRegression(), {"fit_intercept": True}
    elif name == "random-forest":
        forest: dict[str, int] = {"n_estimators": 100, "max_depth": 12, "min_samples_leaf": 2}
        estimator, hyper = RandomForestRegressor(**forest, n_jobs=-1, random_state=seed), {**forest}
    else:
        boosting = {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.8}
        estimator, hyper = GradientBoostingRegressor(**boosting, random_state=seed), {**boosting}  # type: ignore[arg-type]
    return estimator, {"model": name, "estimator_class": class_path(estimator), **hyper}


def estimator_class(name: str) -> str:
    """The estimator class of a candidate: 'sklearn.ensemble.RandomForestRegressor' for 'random-forest'."""
    return class_path(build_candidate(name, seed=0)[0])


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
    # A retraining (trainer/MLproject `retrain`): production windows (artifact URIs) and the gate.
    production_data: str | None = None
    holdout_data: str | None = None
    trigger: str = "manual"
    thresholds: gate.Thresholds = field(default_factory=gate.Thresholds)
    # The CI pipeline: the gate judges, production waits for the approved promotion job.
    approval_required: bool = False

    def __post_init__(self) -> None:
        # Full names from here on (`rf` -> `random-forest`), each once; ValueError for an unknown one.
        self.models = tuple(dict.fromkeys(candidate_name(m) for m in self.models))


@dataclass
class TargetResult:
    target: str
    best_model: str
    best_run_id: str
    test_rmse: dict[str, float]
    version: str | None = None
    promoted: bool | None = None
    decision: str = ""  # the gate's outcome: promoted, awaiting_approval, not_promoted


@dataclass
class SessionResult:
    parent_run_id: str
    experiment_name: str
    experiment_id: str
    results: list[TargetResult] = field(default_factory=list)


class Candidate(NamedTuple):
    """One fitted candidate: its run, its logged scikit-learn model, its metrics, the pipeline."""

    run_id: str
    model_uri: str
    metrics: dict[str, float]
    pipeline: Pipeline


class TrackingUnavailable(RuntimeError):
    """The tracking server did not answer within the retry budget."""


def wait_for_tracking_server(settings: Settings) -> None:
    """Poll /health with exponential backoff; raise TrackingUnavailable when the budget runs out."""
    uri = settings.mlflow.tracking_uri.rstrip("/")
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
    client = MlflowClient(settings.mlflow.tracking_uri)
    return all(version_by_alias(client, model_for_target(t).name, PRODUCTION) for t in targets)


def load_data(options: Options) -> tuple[pd.DataFrame, str]:
    """The dataset and a short description of where it came from."""
    if options.data_csv is not None:
        return data.load_csv(options.data_csv), f"csv:{options.data_csv.name}"
    df = synthetic.generate(options.n_rows, seed=options.seed, drift=options.drift)
    return df, f"synthetic:seed={options.seed},drift={options.drift}"


def load_window(
    uri: str, target: str, name: str, settings: Settings
) -> tuple[pd.DataFrame, mlflow.data.dataset.Dataset]:
    """A production window the orchestrator logged as a CSV artifact (`runs:/<run>/<path>`):
    features and `target`, checked against the schema, and the dataset to log as an input. Its
    source is the artifact's download link in the MLflow UI (a local path without a server)."""
    path = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    frame = pd.read_csv(path)
    if target not in frame.columns:
        raise data.SchemaError(f"{uri} has no {target!r} column")
    checked = data.validate(frame, uri, require_targets=False)
    checked[target] = pd.to_numeric(frame[target], errors="raise").astype(float)
    run_id, _, artifact = uri.removeprefix("runs:/").partition("/")
    source: str | HTTPDatasetSource = path
    if settings.ui_url:
        query = urllib.parse.urlencode({"path": artifact, "run_uuid": run_id})
        source = HTTPDatasetSource(f"{settings.ui_url}/get-artifact?{query}")
    dataset = mlflow.data.from_pandas(checked, source=source, name=name, targets=target)  # type: ignore[attr-defined]
    return checked, dataset


def _log_candidate(
    name: str,
    target: str,
    frames: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    datasets: dict[str, mlflow.data.dataset.Dataset],
    common: dict[str, object],
    tags: dict[str, str],
    profile_rows: pd.DataFrame | None = None,
    estimator_rows: pd.DataFrame | None = None,
) -> Candidate:
    """Fit one candidate in its own nested run, named `<candidate>-<target>`. `datasets` are logged
    as the run's inputs (context -> dataset); the drift reference profile describes `profile_rows`
    when given (a retraining: the production window), else the training rows. The loss estimator
    learns from the validation rows plus `estimator_rows` (a retraining: the production holdout,
    which no candidate trains on), so it has seen the traffic the version will serve."""
    train, val, test = frames
    estimator, params = build_candidate(name, int(str(common["seed"])))
    model = Pipeline([("preprocess", build_preprocessor()), ("model", estimator)])
    x_train, y_train = train[list(FEATURE_NAMES)], train[target]
    run_name = f"{name}-{target}"
    with mlflow.start_run(run_name=run_name, nested=True, tags=tags, log_system_metrics=True) as run:
        for context, dataset in datasets.items():
            mlflow.log_input(dataset, context=context)
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
        metrics |= meter.metrics()
        mlflow.log_params({**common, **params, "target": target, **preprocessor_params()})

        x_test, y_test = test[list(FEATURE_NAMES)], test[target].to_numpy()
        predictions = model.predict(x_test)
        title = f"{name} - {target}"
        mlflow.log_figure(
            evaluate.predicted_vs_actual(y_test, predictions, title), "plots/predicted_vs_actual.png"
        )
        mlflow.log_figure(evaluate.residuals(y_test, predictions, title), "plots/residuals.png")
        importance = evaluate.feature_importance(model, title)
        if importance is not None:
            mlflow.log_figure(importance, "plots/feature_importance.png")
        evaluate.close_figures()

        # The reference the gateway compares live traffic with (drift detection).
        reference = x_train if profile_rows is None else profile_rows[list(FEATURE_NAMES)]
        profile = drift.build_profile(reference, model.predict(reference), seed=int(str(common["seed"])))
        mlflow.log_dict(profile, drift.PROFILE_ARTIFACT)
        # The loss estimator the monitor estimates live quality with, before feedback arrives.
        held_out = val if estimator_rows is None else pd.concat([val, estimator_rows], ignore_index=True)
        columns = [*FEATURE_NAMES, target]
        log_loss_estimator(model, target, held_out[columns], test, int(str(common["seed"])))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "preprocessor.skops"
            skops.io.dump(model[0], path)
            mlflow.log_artifact(str(path), "preprocessor")
        example = x_train.head(5)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature(model, example),
            input_example=example,
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=_pip_requirements(),
        )
        # Metrics after the model: MLflow links them to it as they are logged. Logged before, they
        # would be sent again by log_model to link them, and the duplicate insert shows up as an
        # error in the Postgres log (docs/training.md).
        mlflow.log_metrics(metrics)
    return Candidate(run.info.run_id, info.model_uri, metrics, model)


VALIDATION_FILE = "validation.json"


def log_loss_estimator(
    model: Pipeline, target: str, held_out: pd.DataFrame, test: pd.DataFrame, seed: int
) -> dict[str, float]:
    """Fit the model's loss estimator (contracts/dle.py) on `held_out` rows it did not train on (the
    validation split), check it on the test split and log it as an artifact (`estimator/`), with its
    validation figures (`dle_val_*`) beside it in `estimator/validation.json`. Not as run metrics:
    eleven more rows would push MAE/RMSE/R2 down the participants' compare view. Returns them."""
    started = time.perf_counter()

    def design(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        predicted = model.predict(frame[list(FEATURE_NAMES)])
        return dle.design_matrix(dle.frame_rows(frame), predicted), predicted

    x, predicted = design(held_out)
    estimator = dle.fit(x, held_out[target].to_numpy(), predicted, seed=seed)
    x_test, predicted_test = design(test)
    figures = dle.validate(estimator, x_test, test[target].to_numpy(), predicted_test)
    figures |= {"dle_fit_rows": float(len(held_out)), "dle_fit_seconds": time.perf_counter() - started}
    with tempfile.TemporaryDirectory() as tmp:
        dle.save(estimator, Path(tmp))
        mlflow.log_artifacts(tmp, dle.FOLDER)
    mlflow.log_dict(figures, f"{dle.FOLDER}/{VALIDATION_FILE}")
    return figures


def signature(model: Pipeline, example: pd.DataFrame) -> mlflow.models.ModelSignature:
    """The model signature every form of a version shares: the schema's columns in, one float out."""
    return infer_signature(example, model.predict(example))


def compile_best(best: Candidate, train: pd.DataFrame, test: pd.DataFrame) -> compiled.Compiled:
    """The ONNX form of the candidate to register, logged on its run (trainer/compiled.py)."""
    example = train[list(FEATURE_NAMES)].head(5)
    with mlflow.start_run(run_id=best.run_id, nested=True, log_system_metrics=False):
        return compiled.compile_and_log(
            best.pipeline, test[list(FEATURE_NAMES)], signature(best.pipeline, example), example
        )


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


def tag_model_training(client: MlflowClient, experiment: mlflow.entities.Experiment) -> None:
    """Mark the experiment as a model-training one (contracts/experiments.py), once; a login that
    may not tag it (a teammate's experiment under `mlflow run`) leaves it as it is."""
    missing = {
        key: value
        for key, value in experiments.TRAINING_EXPERIMENT_TAGS.items()
        if experiment.tags.get(key) != value
    }
    for key, value in missing.items():
        try:
            client.set_experiment_tag(experiment.experiment_id, key, value)
        except MlflowException as exc:
            if exc.error_code != "PERMISSION_DENIED":
                raise
            log.warning("experiment %s: this login may not tag it (403)", experiment.name)
            return


def session_description(
    settings: Settings, experiment_id: str, parent_run_id: str, scores: dict[str, dict[str, Candidate]]
) -> str:
    """The session run's description (Markdown, shown on its page): each target's candidates with
    their test metrics, and links to the candidates' runs and to MLflow's compare page."""
    lines = ["Candidates of this session, best validation RMSE first, with their test metrics.", ""]
    ui = settings.ui_url
    if ui:
        link = experiments.candidates_url(ui, experiment_id, parent_run_id)
        lines += [f"[All candidate runs of this session]({link})", ""]
    header = [m.removeprefix("test_").upper() for m in experiments.KEY_METRICS]
    for target, candidates in scores.items():
        ranked = sorted(candidates.items(), key=lambda item: item[1].metrics["val_rmse"])
        title = f"**{target}**"
        if ui:
            compare = experiments.compare_url(ui, experiment_id, [c.run_id for _, c in ranked])
            title += f" ([compare]({compare}))"
        lines += [title, "", "| candidate | " + " | ".join(f"test {h}" for h in header) + " |"]
        lines.append("|---" * (len(header) + 1) + "|")
        for name, candidate in ranked:
            values = " | ".join(f"{candidate.metrics[m]:.4f}" for m in experiments.KEY_METRICS)
            cell = f"[{name}]({experiments.run_url(ui, experiment_id, candidate.run_id)})" if ui else name
            lines.append(f"| {cell} | {values} |")
        lines.append("")
    return "\n".join(lines)


def check_options(options: Options) -> None:
    """ValueError for targets the schema does not know, or production windows without one target."""
    unknown = [t for t in options.targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"unknown target(s) {unknown}: choose from {', '.join(TARGETS)}")
    if (options.production_data or options.holdout_data) and len(options.targets) != 1:
        raise ValueError("--production-data and --holdout-data need exactly one --targets")


class Tracking(NamedTuple):
    """Where the session logs: the client, the experiment, and the `mlflow run` run if any."""

    client: MlflowClient
    experiment: mlflow.entities.Experiment
    project_run: str | None  # MLFLOW_RUN_ID: `mlflow run` created the session run already


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the tracking server (nothing is created there yet)."""
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_system_metrics_sampling_interval(settings.system_metrics_interval_s)  # type: ignore[arg-type]
    mlflow.set_system_metrics_samples_before_logging(1)
    return MlflowClient(settings.mlflow.tracking_uri)


def open_experiment(settings: Settings, client: MlflowClient) -> Tracking:
    """The session's experiment (the participant's, or the one of the `mlflow run` project run),
    created if missing and tagged as a model-training experiment."""
    project_run = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`: log into its experiment
    if project_run:
        # The candidates' nested runs go to the project run's experiment: `mlflow run --run-id`
        # does not make it the active one, and a login may write nowhere else (403).
        experiment = mlflow.set_experiment(experiment_id=client.get_run(project_run).info.experiment_id)
    else:
        experiment = mlflow.set_experiment(settings.tags.participant)
    tag_model_training(client, experiment)
    return Tracking(client, experiment, project_run or None)


@dataclass
class Inputs:
    """Everything a session trains, judges and logs on, loaded before its first run starts."""

    source: str  # where the data came from, as a short description
    train: pd.DataFrame  # with the production window appended in a retraining
    val: pd.DataFrame
    test: pd.DataFrame
    reference: pd.DataFrame  # the gate's fixed reference set (trainer/gate.py)
    datasets: dict[str, mlflow.data.dataset.Dataset]  # context -> dataset, logged on every run
    common: dict[str, object]  # the params every run of the session logs
    tags: dict[str, str]  # the tags every run of the session carries
    production: pd.DataFrame | None = None  # a retraining's production window
    holdout: pd.DataFrame | None = None  # a retraining's production holdout (the gate's window)
    holdout_dataset: mlflow.data.dataset.Dataset | None = None


def load_inputs(settings: Settings, options: Options) -> Inputs:
    """Stage 1, load data: the dataset split three ways, the gate's reference set, and in a
    retraining the production window (trained on) and holdout (judged on), each as an MLflow dataset."""
    df, source = load_data(options)
    train, val, test = data.split(df, options.seed)
    common: dict[str, object] = {
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
    inputs = Inputs(
        source, train, val, test, synthetic.reference_set(), {"training": dataset}, common,
        session_tags(settings, source),
    )  # fmt: skip
    target = next(iter(options.targets), "")  # the only one when there are windows (check_options)
    if options.production_data:
        inputs.production, inputs.datasets["production-window"] = load_window(
            options.production_data, target, f"production window ({target})", settings
        )
        inputs.train = pd.concat([train[[*FEATURE_NAMES, target]], inputs.production], ignore_index=True)
    if options.holdout_data:
        inputs.holdout, inputs.holdout_dataset = load_window(
            options.holdout_data, target, f"production holdout ({target})", settings
        )
    return inputs


def session_tags(settings: Settings, source: str) -> dict[str, str]:
    """What every run of the session is tagged with: who trained, on what code, image and data."""
    return {
        "participant": settings.tags.participant,
        "git_commit": settings.tags.git_commit,
        "trainer_image_digest": settings.image_digest or "unknown",
        "platform_version": settings.tags.platform_version,
        "data_source": source,
    }


def log_session_inputs(inputs: Inputs, options: Options) -> None:
    """The session run's params and datasets (the holdout as `gate-holdout`: only the gate reads it)."""
    mlflow.log_params(
        {**inputs.common, "models": ",".join(options.models), "targets": ",".join(options.targets)}
    )
    for context, logged in inputs.datasets.items():
        mlflow.log_input(logged, context=context)
    if inputs.holdout_dataset is not None:
        mlflow.log_input(inputs.holdout_dataset, context="gate-holdout")


def train_candidates(inputs: Inputs, target: str, models: tuple[str, ...]) -> dict[str, Candidate]:
    """Stage 2, train candidates: each model fitted and logged in its own nested run."""
    scores: dict[str, Candidate] = {}
    for key in models:
        log.info("training %s for %s on %d rows", key, target, len(inputs.train))
        scores[key] = _log_candidate(
            key, target, (inputs.train, inputs.val, inputs.test), inputs.datasets, inputs.common,
            inputs.tags, profile_rows=inputs.production, estimator_rows=inputs.holdout,
        )  # fmt: skip
    return scores


def choose(target: str, scores: dict[str, Candidate]) -> TargetResult:
    """Stage 3, choose: the candidate with the lowest validation RMSE (the test split stays unseen
    by the choice); every candidate's test RMSE is kept for the summary."""
    best = min(scores, key=lambda k: scores[k].metrics["val_rmse"])
    return TargetResult(
        target, best, scores[best].run_id, {k: s.metrics["test_rmse"] for k, s in scores.items()}
    )


def judge(
    client: MlflowClient, model_uri: str, inputs: Inputs, target: str, options: Options
) -> gate.Decision:
    """Stage 5, gate: the served form of the candidate against the production version on the test
    split, the fixed reference set and, in a retraining, the production holdout."""
    name = model_for_target(target).name
    frames = {
        gate.TEST: inputs.test[[*FEATURE_NAMES, target]],
        gate.REFERENCE: inputs.reference[[*FEATURE_NAMES, target]],
    }
    if inputs.holdout is not None:
        frames[gate.WINDOW] = inputs.holdout[[*FEATURE_NAMES, target]]
    candidate = gate.evaluate_model(model_uri, frames, target, "candidate")
    champion = version_by_alias(client, name, PRODUCTION)
    return gate.decide(
        candidate,
        None
        if champion is None
        else gate.evaluate_model(f"models:/{name}/{champion.version}", frames, target, "production"),
        None if champion is None else str(champion.version),
        options.thresholds,
        options.trigger,
        approval_required=options.approval_required,
        reference_baseline=register.reference_baseline(client, name),
    )


def register_best(
    client: MlflowClient, model_uri: str, decision: gate.Decision, tags: dict[str, str], outcome: TargetResult
) -> None:
    """Stage 6, register: the version with the gate's decision in its tags, `staging` (and
    `production` when promoted) on it, and the outcome in `outcome` and on the session run. A login
    that may not register (a participant's: 403) leaves the run logged and nothing registered."""
    name, target = model_for_target(outcome.target).name, outcome.target
    try:
        outcome.version = register.register_and_promote(client, name, model_uri, decision, tags)
    except MlflowException as exc:
        if exc.error_code != "PERMISSION_DENIED":
            raise
        # A participant's login reads the registry; the platform's accounts register
        # (docs/operations.md, "Team access and threat model"). The run is logged; nothing is registered.
        log.warning("%s: this login may not register versions (403); run logged only", name)
        mlflow.set_tag(f"{target}.registered", "denied")
        return
    register.record_reference_baseline(client, name, decision, outcome.version)
    outcome.promoted = decision.moves_production
    outcome.decision = decision.outcome
    mlflow.set_tags(
        {f"{target}.version": outcome.version}
        | {f"{target}.{key}": value for key, value in decision.tags().items()}
    )
    log.info("%s v%s: %s", name, outcome.version, decision.reason)


def train_target(
    client: MlflowClient, inputs: Inputs, target: str, options: Options
) -> tuple[TargetResult, dict[str, Candidate]]:
    """One target through the stages: train candidates, choose, and when registering, compile the
    best (stage 4: ONNX when it converts; the gate judges, and serving loads, the form that serves),
    gate and register it. Returns the outcome and every candidate."""
    scores = train_candidates(inputs, target, options.models)
    outcome = choose(target, scores)
    best = scores[outcome.best_model]
    if options.register:
        served = compile_best(best, inputs.train, inputs.test)
        model_uri = served.model_uri or best.model_uri
        decision = judge(client, model_uri, inputs, target, options)
        version_tags = {
            **inputs.tags,
            "target": target,
            "model": outcome.best_model,
            "estimator_class": estimator_class(outcome.best_model),
            "run_id": outcome.best_run_id,
            "sklearn_model_uri": best.model_uri,
            **served.tags,
        }
        register_best(client, model_uri, decision, version_tags, outcome)
    mlflow.log_metrics({f"{target}.best_test_rmse": best.metrics["test_rmse"]})
    mlflow.set_tag(f"{target}.best_model", outcome.best_model)
    return outcome, scores


def run_session(settings: Settings, options: Options) -> SessionResult:
    """Train every candidate for every target, register the best, promote it if it is better: the
    stages in order, in one session run; a failed session's runs are marked FAILED (`fail_session`)."""
    check_options(options)
    client = connect(settings)
    inputs = load_inputs(settings, options)  # production windows are run artifacts: after connect
    tracking = open_experiment(settings, client)
    experiment = tracking.experiment
    # `mlflow run` created the session run already (MLFLOW_RUN_ID): keep its name.
    run_name = None if tracking.project_run else f"session-{time.strftime('%Y%m%d-%H%M%S')}"
    parent_id: str | None = None
    try:
        with mlflow.start_run(run_name=run_name, tags=inputs.tags) as parent:
            parent_id = parent.info.run_id
            log_session_inputs(inputs, options)
            result = SessionResult(parent_id, experiment.name, experiment.experiment_id)
            session_scores: dict[str, dict[str, Candidate]] = {}
            for target in options.targets:
                outcome, session_scores[target] = train_target(tracking.client, inputs, target, options)
                result.results.append(outcome)
            # The run's description, as MLflow's UI reads it; `make report` adds its link below.
            mlflow.set_tag(
                reports.NOTE_TAG,
                session_description(settings, experiment.experiment_id, parent_id, session_scores),
            )
    except Exception as exc:
        if parent_id is not None:
            exc.add_note(
                fail_session(settings, tracking.client, experiment.experiment_id, parent_id, options.targets)
            )
        raise
    return result


def session_runs(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """The session run and every run under it (candidates, their ONNX checks, the gate's runs)."""
    found, level = [client.get_run(parent_id)], [parent_id]
    while level:
        children = [
            run
            for run_id in level
            for run in client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
        ]
        found += children
        level = [run.info.run_id for run in children]
    return found


def fail_session(
    settings: Settings, client: MlflowClient, experiment_id: str, parent_id: str, targets: tuple[str, ...]
) -> str:
    """After a failed session, once the tracking server answers again (TRAINER_CONNECT_ATTEMPTS):
    mark its runs still RUNNING as FAILED, and delete any version it registered whose registration
    did not finish. Returns what was done, for the one line that reports the failure."""
    try:
        wait_for_tracking_server(settings)
        runs = session_runs(client, experiment_id, parent_id)
        unfinished = [run.info.run_id for run in runs if run.info.status == "RUNNING"]
        for run_id in unfinished:
            client.set_terminated(run_id, "FAILED")
        run_ids = {run.info.run_id for run in runs}
        for target in targets:
            register.delete_unfinished(client, model_for_target(target).name, run_ids)
        return f"session run {parent_id}: {len(unfinished)} unfinished run(s) marked FAILED"
    except Exception as exc:  # the original failure is what the trainer reports
        log.error("could not mark session run %s FAILED: %s", parent_id, one_line(exc))
        return f"session run {parent_id} could not be marked FAILED"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line; MLflow's request errors as the route and the cause:
    'the tracking server failed /api/2.0/mlflow/runs/log-batch (Connection refused)'."""
    # A failed request may fail ending the runs too: report the request that failed first.
    chain, seen = [exc], {id(exc)}
    while (context := chain[-1].__context__) is not None and id(context) not in seen:
        chain.append(context)
        seen.add(id(context))
    first = [e for e in chain if isinstance(e, MlflowException) and "API request to" in str(e)]
    if not first and isinstance(exc, OSError) and exc.strerror:  # a full disk, a directory gone
        return exc.strerror + (f" ({exc.filename})" if exc.filename else "")
    text = " ".join(str(first[-1] if first else exc).split())
    request = re.search(r"API request to (?:endpoint )?(?:https?://[^/\s]+)?(/\S*?)[?\s]", text)
    if request:
        cause = re.search(r"\[Errno -?\d+\] ([^'\")]+)|error code (\d{3})|(Read timed out)", text)
        reason = next((g for g in cause.groups() if g), "") if cause else ""
        if cause and cause.group(2):
            reason = f"HTTP {reason}"
        return f"the tracking server failed {request.group(1)}" + (f" ({reason})" if reason else "")
    return text if len(text) <= limit else text[:limit] + "..."
