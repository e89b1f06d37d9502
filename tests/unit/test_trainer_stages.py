"""The trainer's stages one by one (trainer/train.py): load data, train candidates, choose, compile,
gate, register. Real scikit-learn, ONNX and MLflow, on a SQLite tracking store in a temporary
directory; the whole session against a real server is tests/integration/test_pipeline.py."""

from __future__ import annotations

from collections.abc import Iterator

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from contracts.models import PRODUCTION, model_for_target
from trainer import gate
from trainer.config import Settings
from trainer.train import (
    Candidate,
    Inputs,
    Options,
    TargetResult,
    check_options,
    choose,
    compile_best,
    connect,
    judge,
    load_inputs,
    log_session_inputs,
    open_experiment,
    register_best,
    run_session,
    train_candidates,
)

TARGET = "latency_ms"
ROWS = 800


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    store = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
        env.setenv("PARTICIPANT", "stages")
        env.setenv("GIT_COMMIT", "abc123")
        env.delenv("MLFLOW_RUN_ID", raising=False)
        env.chdir(store)  # a SQLite store puts its artifacts under the working directory
        yield Settings()


@pytest.fixture(scope="module")
def options() -> Options:
    return Options(n_rows=ROWS, seed=7, models=("lr", "rf"), targets=(TARGET,))


@pytest.fixture(scope="module")
def client(settings: Settings) -> MlflowClient:
    return connect(settings)


@pytest.fixture(scope="module")
def inputs(settings: Settings, options: Options, client: MlflowClient) -> Inputs:
    return load_inputs(settings, options)


@pytest.fixture(scope="module")
def session(
    settings: Settings, client: MlflowClient, inputs: Inputs, options: Options
) -> tuple[str, dict[str, Candidate]]:
    """A session run with the candidates of stage 2 under it: (its id, the candidates)."""
    open_experiment(settings, client)
    with mlflow.start_run(run_name="stages", tags=inputs.tags) as run:
        return run.info.run_id, train_candidates(inputs, TARGET, options.models)


@pytest.fixture(scope="module")
def scores(session: tuple[str, dict[str, Candidate]]) -> dict[str, Candidate]:
    return session[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": ("nope",)}, "unknown target"),
        (
            {"targets": ("latency_ms", "bandwidth_efficiency"), "production_data": "runs:/x/w.csv"},
            "exactly one",
        ),
    ],
)
def test_check_options_refuses_what_cannot_be_trained(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_options(Options(**kwargs))  # type: ignore[arg-type]


def test_load_inputs_splits_the_data_and_describes_it(inputs: Inputs, settings: Settings) -> None:
    assert inputs.common["n_rows"] == ROWS
    assert inputs.common["n_train"] + inputs.common["n_val"] + inputs.common["n_test"] == ROWS  # type: ignore[operator]
    assert len(inputs.train) == inputs.common["n_train"] and len(inputs.test) == inputs.common["n_test"]
    assert inputs.source == "synthetic:seed=7,drift=0.0" == inputs.tags["data_source"]
    assert inputs.tags["participant"] == "stages" and inputs.tags["git_commit"] == "abc123"
    assert inputs.tags["trainer_image_digest"] == "unknown"
    assert set(inputs.datasets) == {"training"} and inputs.production is None and inputs.holdout is None
    assert len(inputs.reference) > 0 and TARGET in inputs.reference.columns


def test_each_candidate_has_its_own_nested_run(scores: dict[str, Candidate], client: MlflowClient) -> None:
    assert set(scores) == {"linear-regression", "random-forest"}
    for name, candidate in scores.items():
        run = client.get_run(candidate.run_id)
        assert run.info.run_name == f"{name}-{TARGET}"
        assert run.data.params["target"] == TARGET and run.data.params["seed"] == "7"
        assert run.data.tags["participant"] == "stages" and "mlflow.parentRunId" in run.data.tags
        assert {"val_rmse", "test_rmse", "fit_seconds"} <= set(run.data.metrics)
        assert [i.dataset.name for i in run.inputs.dataset_inputs] == [
            f"network-telemetry ({inputs_source()})"
        ]


def inputs_source() -> str:
    return "synthetic:seed=7,drift=0.0"


def test_choose_takes_the_lowest_validation_rmse(scores: dict[str, Candidate]) -> None:
    outcome = choose(TARGET, scores)
    best = min(scores.values(), key=lambda c: c.metrics["val_rmse"])
    assert outcome.best_run_id == best.run_id and scores[outcome.best_model] is best
    assert outcome.test_rmse == {name: c.metrics["test_rmse"] for name, c in scores.items()}
    assert outcome.version is None and outcome.decision == ""


def test_compile_gate_and_register_a_first_version(
    session: tuple[str, dict[str, Candidate]], client: MlflowClient, inputs: Inputs, options: Options
) -> None:
    session_id, scores = session
    outcome = choose(TARGET, scores)
    best = scores[outcome.best_model]
    served = compile_best(best, inputs.train, inputs.test)
    model_uri = served.model_uri or best.model_uri
    decision = judge(client, model_uri, inputs, TARGET, options)
    # No production version yet: the gate promotes, on the test split and the reference set.
    assert decision.moves_production and decision.champion is None
    assert {gate.TEST, gate.REFERENCE} <= set(decision.candidate)
    with mlflow.start_run(run_id=session_id):
        register_best(client, model_uri, decision, {"run_id": best.run_id}, outcome)
    name = model_for_target(TARGET).name
    assert outcome.version is not None and outcome.promoted and outcome.decision == decision.outcome
    assert str(client.get_model_version_by_alias(name, PRODUCTION).version) == outcome.version
    assert client.get_model_version(name, outcome.version).tags["run_id"] == best.run_id
    tags = client.get_run(session_id).data.tags
    assert (
        tags[f"{TARGET}.version"] == outcome.version
        and tags[f"{TARGET}.promotion.decision"] == decision.outcome
    )


def test_log_session_inputs_logs_params_and_datasets(
    settings: Settings, client: MlflowClient, inputs: Inputs, options: Options
) -> None:
    open_experiment(settings, client)
    with mlflow.start_run(run_name="session-inputs") as run:
        log_session_inputs(inputs, options)
    logged = client.get_run(run.info.run_id)
    assert logged.data.params["models"] == "linear-regression,random-forest"
    assert logged.data.params["targets"] == TARGET and logged.data.params["n_rows"] == str(ROWS)
    assert [i.tags[0].value for i in logged.inputs.dataset_inputs] == ["training"]


def test_run_session_reads_as_its_stages(settings: Settings, client: MlflowClient) -> None:
    """The whole session without registering: each target's best logged on the session run."""
    result = run_session(
        settings, Options(n_rows=ROWS, seed=3, models=("lr",), targets=(TARGET,), register=False)
    )
    [outcome] = result.results
    assert isinstance(outcome, TargetResult) and outcome.best_model == "linear-regression"
    session = client.get_run(result.parent_run_id)
    assert session.data.tags[f"{TARGET}.best_model"] == "linear-regression"
    assert session.data.metrics[f"{TARGET}.best_test_rmse"] == outcome.test_rmse["linear-regression"]
    assert session.info.status == "FINISHED" and result.experiment_name == "stages"
