"""The closed loop, per model: trigger -> production window -> trainer run (train, gate, register) ->
rollout watch -> (rollback). One retraining or watch per model at a time; every step is recorded on
a run of the `retraining` experiment."""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts.experiments import RETRAINING_EXPERIMENT, TRAINING_EXPERIMENT_TAGS
from contracts.models import MODELS, PRODUCTION, RegisteredModel
from contracts.registry import version_by_alias
from contracts.reports import NOTE_TAG
from services.orchestrator import Settings
from services.orchestrator.metrics import OrchestratorMetrics
from services.orchestrator.production import Window, labelled_window
from services.orchestrator.runner import PLAIN_VALUE, Job, Runner
from services.orchestrator.watch import Watcher

log = logging.getLogger(__name__)

TRIGGER_HISTORY = 100  # triggers remembered per model (GET /retrainings)
# Every retraining run the orchestrator creates carries these tags (and no parent): how it tells its
# own runs in the `retraining` experiment from anyone else's.
OWN_RUN_TAGS = ("model", "trigger")
PARENT_TAG = "mlflow.parentRunId"
# Who ended a run the orchestrator did not finish itself, and why.
ENDED_BY_TAG = "retrain.ended_by"
INTERRUPTED = "orchestrator start: interrupted"


@dataclass
class Trigger:
    """Why a retraining was asked for."""

    kind: str  # alert:<alertname>, schedule, manual
    detail: str = ""
    since: datetime | None = None  # a drift alert: when the traffic started to differ
    automatic: bool = True  # automatic triggers also wait out the cooldown
    candidates: tuple[str, ...] = ()
    at: float = field(default_factory=time.time)
    result: str = ""  # started, busy, cooldown
    run_id: str = ""


@dataclass
class ModelState:
    model: RegisteredModel
    busy: str | None = None  # retraining, watching
    run_id: str = ""  # the retraining run in progress
    finished_at: float = 0.0
    production: str | None = None  # the production version last seen
    expected: set[str] = field(default_factory=set)  # versions the loop itself promoted or restored
    triggers: deque[Trigger] = field(default_factory=lambda: deque(maxlen=TRIGGER_HISTORY))
    coalesced: int = 0


class Coordinator:
    def __init__(
        self,
        settings: Settings,
        client: MlflowClient,
        runner: Runner,
        metrics: OrchestratorMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.client, self.runner, self.metrics, self.clock = (
            settings,
            client,
            runner,
            metrics,
            clock,
        )
        self.watcher = Watcher(settings, client, metrics, clock)
        known = {m.name: m for m in MODELS}
        unknown = [name for name in settings.models if name not in known]
        if unknown:
            raise ValueError(f"ORCHESTRATOR_MODELS names unknown models {unknown} (contracts/models.py)")
        self.states = {name: ModelState(known[name]) for name in settings.models}
        self._lock = threading.Lock()
        self._trainer_slots = threading.Semaphore(settings.retrain.max_parallel)
        self.stopping = threading.Event()
        self.started_ms = int(clock() * 1000)  # runs started before this are an earlier process's
        self._threads: list[threading.Thread] = []
        metrics.initialise(list(self.states))

    # --- triggers ---------------------------------------------------------------------------------

    def trigger(self, model: str, trigger: Trigger) -> Trigger:
        """Start a retraining of `model` unless it is busy or, for automatic triggers, cooling down.
        The trigger is recorded either way, with what became of it (`trigger.result`)."""
        state = self.states[model]
        with self._lock:
            cooling = (
                self.clock() - state.finished_at < self.settings.retrain.cooldown_s
                if state.finished_at
                else False
            )
            if state.busy:
                trigger.result, trigger.run_id = "busy", state.run_id
                state.coalesced += 1
            elif trigger.automatic and cooling:
                trigger.result = "cooldown"
            else:
                trigger.result = "started"
                state.busy, state.run_id, state.coalesced = "retraining", "", 0
            state.triggers.append(trigger)
        self.metrics.triggers.labels(model, trigger.kind, trigger.result).inc()
        log.info("trigger %s for %s: %s %s", trigger.kind, model, trigger.result, trigger.detail)
        if trigger.result == "busy" and trigger.run_id:
            self._safe(
                lambda: self.client.set_tag(trigger.run_id, "triggers.coalesced", str(state.coalesced))
            )
        if trigger.result == "started":
            self._spawn(f"retrain-{model}", lambda: self._retrain(state, trigger))
        return trigger

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    # --- one retraining ---------------------------------------------------------------------------

    def _retrain(self, state: ModelState, trigger: Trigger) -> None:
        model, started = state.model, self.clock()
        self.metrics.in_progress.labels(model.name, "retraining").set(1)
        outcome, run_id = "failed", ""
        try:
            experiment = self._experiment_id()
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            run = self.client.create_run(
                experiment,
                run_name=f"retrain-{model.key}-{stamp}",
                tags={
                    "model": model.name,
                    "target": model.target,
                    "trigger": trigger.kind,
                    "trigger.detail": trigger.detail[:500],
                    NOTE_TAG: f"Retraining of {model.name} ({trigger.kind}) in progress.",
                },
            )
            with self._lock:
                run_id = state.run_id = trigger.run_id = run.info.run_id
                coalesced = state.coalesced
            if coalesced:  # triggers that arrived before the run existed
                self.client.set_tag(run_id, "triggers.coalesced", str(coalesced))
            outcome = self._retrain_in(run_id, state, trigger, started)
        except Exception as exc:  # recorded on the run and in the log; the loop goes on
            log.exception("retraining of %s failed", model.name)
            if run_id:
                self._finish(run_id, "failed", f"{type(exc).__name__}: {exc}"[:1000], "FAILED")
        finally:
            self.metrics.retrainings.labels(model.name, trigger.kind, outcome).inc()
            self.metrics.in_progress.labels(model.name, "retraining").set(0)
            with self._lock:
                state.busy = None
                if outcome in ("promoted", "kept"):  # a decision: automatic triggers cool down
                    state.finished_at = self.clock()

    def _experiment_id(self) -> str:
        """The `retraining` experiment, created on first use (two models' retrainings may race to
        create it: the loser reads the winner's)."""
        found = self.client.get_experiment_by_name(RETRAINING_EXPERIMENT)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(RETRAINING_EXPERIMENT, tags=TRAINING_EXPERIMENT_TAGS))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        created = self.client.get_experiment_by_name(RETRAINING_EXPERIMENT)
        assert created is not None, "the retraining experiment exists and cannot be read"
        return str(created.experiment_id)

    def _retrain_in(self, run_id: str, state: ModelState, trigger: Trigger, started: float) -> str:
        """The retraining steps inside run `run_id`: the production window, the trainer on it, then
        what its gate decided (and the rollout watch after a promotion); returns the outcome."""
        if not self.settings.monitoring.db_uri:
            self._finish(run_id, "skipped", "no prediction log to learn from (MONITORING_DB_URI is empty)")
            return "skipped"
        if not self._collect_window(run_id, state.model, trigger, started):
            return "skipped"
        if not self._run_trainer(run_id, state.model, trigger):
            return "failed"
        return self._follow_decision(run_id, state, started)

    def _collect_window(self, run_id: str, model: RegisteredModel, trigger: Trigger, started: float) -> bool:
        """Log the labelled production window on the run; False (the run finished as skipped) when it
        has fewer than RETRAIN_MIN_ROWS rows."""
        s = self.settings
        end = datetime.now(UTC)
        start = end - timedelta(seconds=s.retrain.window_s)
        if trigger.since is not None:
            start = max(start, trigger.since - timedelta(seconds=s.retrain.drift_lookback_s))
        window = labelled_window(s.monitoring.db_uri, model, start, end)
        train, holdout = window.split(s.retrain.holdout_share)
        data_s = self.clock() - started
        self.metrics.stage.labels(model.name, "data").observe(data_s)
        self.client.log_metric(run_id, "timing.data_s", data_s)
        self._log_window(run_id, window, train, holdout)
        if len(window.rows) < s.retrain.min_rows:
            reason = (
                f"the production window {start:%H:%M:%S}-{end:%H:%M:%S} UTC has {len(window.rows)} labelled "
                f"rows, fewer than RETRAIN_MIN_ROWS={s.retrain.min_rows}: not retrained"
            )
            self._finish(run_id, "skipped", reason)
            return False
        return True

    def _run_trainer(self, run_id: str, model: RegisteredModel, trigger: Trigger) -> bool:
        """Run the trainer (a container or a Job) on the logged window, its logs and exit code on
        the run; False (the run finished as failed) when it did not exit 0."""
        s = self.settings
        candidates = trigger.candidates or tuple(s.retrain.candidates)
        params = {
            "target": model.target,
            "models": ",".join(candidates),
            "reference_rows": str(s.retrain.reference_rows),
            "seed": "42",
            "production_data": f"runs:/{run_id}/production/train_window.csv",
            "holdout_data": f"runs:/{run_id}/production/holdout_window.csv",
            "trigger": trigger.kind,
            "gate_min_improvement": str(s.gate.min_relative_improvement),
            "gate_min_rows": str(s.gate.min_labelled_rows),
            "gate_max_test_regression": str(s.gate.max_test_regression),
            "gate_max_reference_regression": str(s.gate.max_reference_regression),
        }
        self.client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])
        job = Job(run_id, params)
        self.client.set_tag(run_id, "reproduce", "mlflow " + " ".join(job.project_args("trainer")))
        with self._trainer_slots:  # RETRAIN_MAX_PARALLEL
            training_started = self.clock()
            result = self.runner.run(job)
            training_s = self.clock() - training_started
        self.metrics.stage.labels(model.name, "training").observe(training_s)
        self.client.log_metric(run_id, "timing.training_s", training_s)
        self.client.set_tag(run_id, "trainer.image_digest", result.image_digest)
        self.client.set_tag(run_id, "trainer.exit_code", str(result.exit_code))
        self.client.log_text(run_id, result.logs, "logs/trainer.log")
        if result.exit_code != 0:
            last = next((line for line in reversed(result.logs.splitlines()) if line.strip()), "")
            self._finish(
                run_id, "failed", f"the trainer exited with {result.exit_code}: {last[:300]}", "FAILED"
            )
            return False
        return True

    def _follow_decision(self, run_id: str, state: ModelState, started: float) -> str:
        """What the trainer's gate decided, from the run's tags: kept, or promoted and then watched
        (rolled back automatically when the watch fails); returns the outcome."""
        model = state.model
        tags = self.client.get_run(run_id).data.tags
        decision = tags.get(f"{model.target}.promotion.decision", "")
        version = tags.get(f"{model.target}.version", "")
        reason = tags.get(f"{model.target}.promotion.reason", "")
        decided = self.clock()
        self.metrics.duration.labels(model.name).observe(decided - started)
        self.metrics.last_success.labels(model.name).set(decided)
        if decision != "promoted" or not version:
            self._finish(run_id, "kept", f"v{version} not promoted: {reason}")
            return "kept"

        previous = tags.get(f"{model.target}.promotion.compared_with_version") or None
        with self._lock:
            state.busy = "watching"
            state.expected.add(version)
        self.client.set_tag(run_id, NOTE_TAG, f"v{version} promoted ({reason}); watching the rollout.")
        watched = self._watch(state, version, previous, run_id)
        if watched.served_after_s is not None:
            self.metrics.stage.labels(model.name, "rollout").observe(watched.served_after_s)
            self.client.log_metric(run_id, "timing.rollout_s", watched.served_after_s)
        self.client.log_metric(
            run_id, "timing.alert_to_serving_s", decided - started + (watched.served_after_s or 0)
        )
        final = "promoted" if watched.outcome in ("passed", "superseded") else "rolled_back"
        self._finish(
            run_id, final, f"v{version} promoted ({reason}); watch {watched.outcome}: {watched.reason}"
        )
        return "promoted"

    def _log_window(self, run_id: str, window: Window, train: Any, holdout: Any) -> None:
        """The production window as artifacts (the trainer reads them) and as dataset inputs with
        their digests (the lineage the MLflow UI shows)."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, frame in (("train_window", train), ("holdout_window", holdout)):
                path = Path(tmp) / f"{name}.csv"
                frame.to_csv(path, index=False)
                self.client.log_artifact(run_id, str(path), "production")
        self.client.log_batch(
            run_id,
            params=[
                mlflow.entities.Param("window.start", window.start.isoformat(timespec="seconds")),
                mlflow.entities.Param("window.end", window.end.isoformat(timespec="seconds")),
                mlflow.entities.Param("window.labelled_rows", str(len(window.rows))),
                mlflow.entities.Param("window.train_rows", str(len(train))),
                mlflow.entities.Param("window.holdout_rows", str(len(holdout))),
            ],
        )

    # --- watching ---------------------------------------------------------------------------------

    def _watch(self, state: ModelState, version: str, previous: str | None, run_id: str) -> Any:
        model = state.model.name
        self.metrics.in_progress.labels(model, "watching").set(1)
        try:
            result = self.watcher.run(model, version, previous, self.stopping)
        finally:
            self.metrics.in_progress.labels(model, "watching").set(0)
        self.metrics.watches.labels(model, result.outcome).inc()
        if result.outcome in ("rollout_failed", "rolled_back") and previous:
            with self._lock:  # the alias back on `previous` is the loop's own move, not news
                state.expected.add(previous)
        if result.outcome == "rollout_failed" and previous:
            self.watcher.rollback(model, version, previous, result.reason, "rollout_failed")
        if run_id:
            self.client.set_tag(run_id, "watch.outcome", result.outcome)
            self.client.set_tag(run_id, "watch.reason", result.reason[:1000])
            self.client.set_tag(run_id, "watch.figures", json.dumps(result.figures, default=str)[:5000])
        log.info("watch of %s v%s: %s (%s)", model, version, result.outcome, result.reason)
        return result

    def poll_registry(self) -> None:
        """Notice production aliases moved by someone else (a person, the UI) and watch those versions
        too; versions the loop itself set are not watched twice."""
        for name, state in self.states.items():
            current = version_by_alias(self.client, name, PRODUCTION)
            version = None if current is None else str(current.version)
            with self._lock:
                previous, state.production = state.production, version
                if version is None or version == previous or previous is None:
                    continue
                if version in state.expected:
                    state.expected.discard(version)
                    continue
                if state.busy:
                    state.production = previous  # look again once the model is free
                    continue
                state.busy = "watching"
            log.info(
                "%s: production moved from v%s to v%s outside the loop: watching it", name, previous, version
            )
            self._spawn(f"watch-{name}", functools.partial(self._watch_moved, state, version, previous))

    def _watch_moved(self, state: ModelState, version: str, previous: str) -> None:
        try:
            self._watch(state, version, previous, "")
        except Exception:
            log.exception("watch of %s v%s failed", state.model.name, version)
        finally:
            with self._lock:
                state.busy = None

    def rollback(self, model: str, reason: str) -> dict[str, str]:
        """`make rollback`: production back to the version it replaced (the gate's champion, or the
        version seen before). Raises LookupError when there is nothing to go back to."""
        current = version_by_alias(self.client, model, PRODUCTION)
        if current is None:
            raise LookupError(f"{model} has no production version")
        version = str(current.version)
        target = current.tags.get("promotion.compared_with_version") or ""
        if not target:
            raise LookupError(f"{model} v{version} records no version it replaced: nothing to roll back to")
        with self._lock:
            self.states[model].expected.add(target)
        if not self.watcher.rollback(model, version, target, reason, "manual"):
            raise LookupError(f"{model} production moved while rolling back")
        return {"model": model, "from_version": version, "to_version": target}

    # --- bookkeeping ------------------------------------------------------------------------------

    def _finish(self, run_id: str, outcome: str, reason: str, status: str = "FINISHED") -> None:
        self.client.set_tag(run_id, "outcome", outcome)
        self.client.set_tag(run_id, "outcome.reason", reason[:5000])
        self.client.set_tag(run_id, NOTE_TAG, f"**{outcome}**: {reason}")
        run = self.client.get_run(run_id)
        if run.info.status == "RUNNING":
            self.client.set_terminated(run_id, status)
        log.info("retraining run %s: %s: %s", run_id, outcome, reason)

    def end_interrupted(self) -> list[str]:
        """End as KILLED the retraining runs an earlier orchestrator process left RUNNING (it was
        restarted mid-retraining, or a backup taken mid-retraining was restored), with their RUNNING
        nested runs, each tagged ENDED_BY_TAG. Runs this process started, finished runs and runs the
        orchestrator did not start are left alone. Returns the ids of the ended runs."""
        experiment = self.client.get_experiment_by_name(RETRAINING_EXPERIMENT)
        if experiment is None:
            return []
        running = self.client.search_runs(
            [experiment.experiment_id], "attributes.status = 'RUNNING'", max_results=1000
        )
        interrupted = [
            run.info.run_id
            for run in running
            if all(tag in run.data.tags for tag in OWN_RUN_TAGS)
            and PARENT_TAG not in run.data.tags
            and run.info.start_time < self.started_ms
        ]
        ended, nested = set(interrupted), []
        while True:  # nested runs (candidates, gate evaluations), at any depth
            found = [
                run.info.run_id
                for run in running
                if run.data.tags.get(PARENT_TAG) in ended and run.info.run_id not in ended
            ]
            if not found:
                break
            ended.update(found)
            nested += found
        for run_id in nested:
            self.client.set_tag(run_id, ENDED_BY_TAG, INTERRUPTED)
            self.client.set_terminated(run_id, "KILLED")
        for run_id in interrupted:
            self.client.set_tag(run_id, ENDED_BY_TAG, INTERRUPTED)
            self._finish(
                run_id,
                "interrupted",
                "the orchestrator stopped during this retraining (a restart, or the restore of a backup "
                "taken while it ran); its next start ended the run",
                "KILLED",
            )
        return [*interrupted, *nested]

    def _safe(self, call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception as exc:  # bookkeeping must not break a trigger
            log.warning("could not record on MLflow: %s", exc)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                name: {
                    "busy": state.busy,
                    "run_id": state.run_id,
                    "production": state.production,
                    "finished_at": state.finished_at or None,
                    "triggers": [
                        {k: v for k, v in asdict(t).items() if k != "since"}
                        | {"since": t.since.isoformat() if t.since else None}
                        for t in list(state.triggers)[-20:]
                    ],
                }
                for name, state in self.states.items()
            }

    def start_polling(self) -> None:
        for name, state in self.states.items():  # what serves now is not watched
            try:
                current = version_by_alias(self.client, name, PRODUCTION)
                state.production = None if current is None else str(current.version)
            except Exception as exc:
                log.warning("cannot read %s@production yet: %s", name, exc)

        def end_interrupted() -> None:  # retried until the tracking server answers
            while True:
                try:
                    ended = self.end_interrupted()
                    if ended:
                        log.info("ended %d retraining runs left RUNNING by an interruption: %s",
                                 len(ended), ", ".join(ended))  # fmt: skip
                    return
                except Exception as exc:
                    log.warning("cannot end interrupted retraining runs yet: %s", exc)
                if self.stopping.wait(self.settings.registry_poll_s):
                    return

        self._spawn("end-interrupted", end_interrupted)

        def loop() -> None:
            while not self.stopping.wait(self.settings.registry_poll_s):
                try:
                    self.poll_registry()
                except Exception as exc:  # the tracking server is down: try again next time
                    log.warning("registry poll failed: %s", exc)

        self._spawn("registry-poll", loop)


def plain_candidates(values: list[str]) -> tuple[str, ...]:
    """Candidate names from a request, each a plain value (they become a trainer parameter)."""
    for value in values:
        if not PLAIN_VALUE.match(value) or "," in value:
            raise ValueError(f"candidate {value!r} is not a plain name")
    return tuple(values)
