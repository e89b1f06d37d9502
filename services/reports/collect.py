"""What a report shows from MLflow: sessions, candidate runs, the registry's history, retrainings.

Read-only: everything here works with the reports service's READ login.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from mlflow.entities import Experiment, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts import reports as names
from contracts.experiments import RETRAINING_EXPERIMENT
from contracts.models import MODELS
from contracts.registry import is_absent

RUN_ID = re.compile(r"[0-9a-f]{32}")
MAX_RUNS = 5000  # per experiment: a workshop's sessions fit many times over


class NotFound(LookupError):
    """The experiment or session asked for does not exist; the message is one line for the user."""


@dataclass(frozen=True)
class Candidate:
    """One candidate run: a model fitted for one target in one session."""

    run_id: str
    run_name: str
    model: str
    target: str
    session_id: str
    experiment: str
    start_ms: int
    end_ms: int | None
    metrics: dict[str, float]

    def metric(self, name: str) -> float | None:
        value = self.metrics.get(name)
        return None if value is None or math.isnan(value) else value

    @property
    def duration_s(self) -> float | None:
        return None if self.end_ms is None else (self.end_ms - self.start_ms) / 1000


@dataclass(frozen=True)
class Session:
    run_id: str
    run_name: str
    experiment: str
    start_ms: int
    end_ms: int | None
    status: str
    tags: dict[str, str]
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Version:
    """A registered model version with the gate's decision recorded on it."""

    model: str
    target: str
    version: str
    run_id: str
    created_ms: int
    aliases: tuple[str, ...]
    tags: dict[str, str]
    test_rmse: float | None = None
    experiment: str = ""

    @property
    def decision(self) -> str:
        return self.tags.get("promotion.decision", "")

    @property
    def reason(self) -> str:
        return self.tags.get("promotion.reason", "")

    @property
    def trigger(self) -> str:
        return self.tags.get("promotion.trigger", "")

    @property
    def candidate(self) -> str:
        return self.tags.get("model", "")


@dataclass(frozen=True)
class Retraining:
    run_id: str
    model: str
    trigger: str
    detail: str
    outcome: str
    reason: str
    start_ms: int


@dataclass
class ReportData:
    """Everything a report reads from MLflow for one experiment, or one session of it."""

    experiment: str
    experiment_id: str
    sessions: list[Session]
    candidates: list[Candidate]
    versions: dict[str, list[Version]] = field(default_factory=dict)
    retrainings: list[Retraining] = field(default_factory=list)
    session_id: str | None = None  # set when the report is about one session

    @property
    def latest_session(self) -> Session | None:
        return max(self.sessions, key=lambda s: s.start_ms, default=None)

    def targets(self) -> list[str]:
        return sorted({c.target for c in self.candidates})

    def best(self, target: str) -> Candidate | None:
        """The candidate for `target` chosen as the trainer chooses: lowest validation RMSE."""
        return best_candidate([c for c in self.candidates if c.target == target])


def best_candidate(candidates: list[Candidate]) -> Candidate | None:
    """Lowest validation RMSE (the trainer's choice, so the best is the one it registered); the test
    split stays for comparing, never for choosing."""
    scored = [c for c in candidates if c.metric("val_rmse") is not None and c.metric("test_rmse") is not None]
    return min(scored, key=lambda c: c.metrics["val_rmse"], default=None)


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str = "") -> list[Run]:
    runs: list[Run] = []
    token = None
    while len(runs) < MAX_RUNS:
        page = client.search_runs(
            experiment_ids, filter_string, max_results=1000, page_token=token, order_by=["start_time DESC"]
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


def is_candidate(run: Run) -> bool:
    params, tags = run.data.params, run.data.tags
    return (
        names.PARENT_TAG in tags
        and names.GATE_ROLE_TAG not in tags
        and names.MODEL_PARAM in params
        and names.TARGET_PARAM in params
    )


def is_session(run: Run) -> bool:
    return names.PARENT_TAG not in run.data.tags and all(p in run.data.params for p in names.SESSION_PARAMS)


def to_candidate(run: Run, experiment: str) -> Candidate:
    return Candidate(
        run.info.run_id,
        run.info.run_name or run.info.run_id,
        run.data.params[names.MODEL_PARAM],
        run.data.params[names.TARGET_PARAM],
        run.data.tags[names.PARENT_TAG],
        experiment,
        int(run.info.start_time),
        int(run.info.end_time) if run.info.end_time else None,
        dict(run.data.metrics),
    )


def to_session(run: Run, experiment: str) -> Session:
    return Session(
        run.info.run_id,
        run.info.run_name or run.info.run_id,
        experiment,
        int(run.info.start_time),
        int(run.info.end_time) if run.info.end_time else None,
        run.info.status,
        dict(run.data.tags),
        tuple(t for t in run.data.params.get("targets", "").split(",") if t),
    )


def experiment_by_name(client: MlflowClient, name: str) -> Experiment:
    found = client.get_experiment_by_name(name)
    if found is None or found.lifecycle_stage != "active":
        known = ", ".join(e.name for e in participant_experiments(client)) or "none yet"
        raise NotFound(f"no experiment named {name!r} (experiments with training sessions: {known})")
    return found


def participant_experiments(client: MlflowClient) -> list[Experiment]:
    """Active experiments holding at least one candidate run; the closed loop's own is left out."""
    found = []
    for experiment in client.search_experiments(max_results=1000):
        if experiment.name == RETRAINING_EXPERIMENT:
            continue
        runs = client.search_runs([experiment.experiment_id], "params.model != ''", max_results=1)
        if runs:
            found.append(experiment)
    return sorted(found, key=lambda e: e.name)


def experiment_runs(client: MlflowClient, experiment: Experiment) -> tuple[list[Session], list[Candidate]]:
    runs = search_all(client, [experiment.experiment_id])
    sessions = [to_session(r, experiment.name) for r in runs if is_session(r)]
    candidates = [to_candidate(r, experiment.name) for r in runs if is_candidate(r)]
    return sessions, candidates


def registry_history(client: MlflowClient) -> dict[str, list[Version]]:
    """Every version of every registered model of the platform, oldest first, with its test RMSE."""
    history: dict[str, list[Version]] = {}
    experiments: dict[str, str] = {}
    for model in MODELS:
        try:
            registered = client.get_registered_model(model.name)
        except MlflowException as exc:
            if is_absent(exc):
                history[model.name] = []
                continue
            raise
        aliases: dict[str, list[str]] = {}
        for alias, version in (registered.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        versions = []
        for mv in client.search_model_versions(f"name='{model.name}'", max_results=1000):
            tags = dict(mv.tags or {})
            run_id = tags.get("run_id") or mv.run_id or ""
            rmse, experiment = None, ""
            if run_id:
                try:
                    run = client.get_run(run_id)
                    rmse = run.data.metrics.get("test_rmse")
                    experiment_id = run.info.experiment_id
                    if experiment_id not in experiments:
                        experiments[experiment_id] = client.get_experiment(experiment_id).name
                    experiment = experiments[experiment_id]
                except MlflowException as exc:
                    if not is_absent(exc):
                        raise
            versions.append(
                Version(
                    model.name,
                    model.target,
                    str(mv.version),
                    run_id,
                    int(mv.creation_timestamp or 0),
                    tuple(sorted(aliases.get(str(mv.version), []))),
                    tags,
                    rmse,
                    experiment,
                )
            )
        history[model.name] = sorted(versions, key=lambda v: int(v.version))
    return history


def retrainings(client: MlflowClient) -> list[Retraining]:
    """The closed loop's retraining runs (services/orchestrator), newest first."""
    experiment = client.get_experiment_by_name(RETRAINING_EXPERIMENT)
    if experiment is None:
        return []
    found = []
    for run in search_all(client, [experiment.experiment_id], "tags.trigger != ''"):
        tags = run.data.tags
        if names.PARENT_TAG in tags:
            continue
        found.append(
            Retraining(
                run.info.run_id,
                tags.get("model", ""),
                tags.get("trigger", ""),
                tags.get("trigger.detail", ""),
                tags.get("outcome", "running" if run.info.status == "RUNNING" else ""),
                tags.get("outcome.reason", ""),
                int(run.info.start_time),
            )
        )
    return found


def load_experiment(client: MlflowClient, name: str) -> ReportData:
    experiment = experiment_by_name(client, name)
    sessions, candidates = experiment_runs(client, experiment)
    if not candidates:
        raise NotFound(f"experiment {name!r} has no training sessions yet (make train)")
    return ReportData(
        experiment.name,
        experiment.experiment_id,
        sessions,
        candidates,
        registry_history(client),
        retrainings(client),
    )


def load_session(client: MlflowClient, run_id: str) -> ReportData:
    if not RUN_ID.fullmatch(run_id):
        raise NotFound(f"{run_id!r} is not a run id (32 hexadecimal characters)")
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if is_absent(exc):
            raise NotFound(f"no run with id {run_id!r}") from None
        raise
    experiment = client.get_experiment(run.info.experiment_id)
    if not is_session(run):
        raise NotFound(f"run {run_id} is not a training session (a session run has no parent run)")
    children = search_all(
        client, [experiment.experiment_id], f"tags.`{names.PARENT_TAG}` = '{run.info.run_id}'"
    )
    candidates = [to_candidate(r, experiment.name) for r in children if is_candidate(r)]
    return ReportData(
        experiment.name,
        experiment.experiment_id,
        [to_session(run, experiment.name)],
        candidates,
        registry_history(client),
        retrainings(client),
        session_id=run.info.run_id,
    )
