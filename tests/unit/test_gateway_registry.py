"""The gateway's registry poller against a real MLflow registry (SQLite store): which version it
serves, what it loads with it, and what it does when the registry cannot tell."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from contracts.models import PRODUCTION
from services.gateway.metrics import GatewayMetrics
from services.gateway.registry import RegistryPoller, ServedModel, ServedVersion
from services.gateway.validation import SCHEMA_COLUMNS
from tests.conftest import free_port
from tests.gateway_support import make_registry, tracking_uri_restored
from tests.serving_support import ModelServerPing

LATENCY = "latency-predictor"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with tracking_uri_restored():
        yield make_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture
def client(registry: str) -> MlflowClient:
    return MlflowClient(tracking_uri=registry, registry_uri=registry)


class Loads:
    """Records the poller's on_loaded calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, str]] = []

    def __call__(self, model: ServedModel, previous: ServedVersion | None, loaded: ServedVersion) -> None:
        self.calls.append((model.name, previous.version if previous else None, loaded.version))


def poller(
    uri: str, *names: str, upstream: str = "http://127.0.0.1:1"
) -> tuple[RegistryPoller, dict[str, ServedModel], Loads]:
    """A poller of `names`, whose model servers are at `upstream` (by default: nothing answers)."""
    metrics, loads = GatewayMetrics(), Loads()
    models = {n: ServedModel(n, upstream, metrics.for_model(n)) for n in names}
    return RegistryPoller(uri, PRODUCTION, models, 60, loads), models, loads


def new_version(client: MlflowClient, name: str, signature: bool = True) -> str:
    """Another version of `name`: a new run, with the first version's model (signature) or a model
    without a signature, and no reference profile."""
    first = client.get_model_version(name, "1")
    experiment = client.get_run(first.run_id).info.experiment_id
    run = client.create_run(experiment)
    if signature:
        source = first.source
    else:
        with tempfile.TemporaryDirectory() as tmp:
            Model(artifact_path="model", run_id=run.info.run_id).save(str(Path(tmp) / "MLmodel"))
            client.log_artifacts(run.info.run_id, tmp, "model")
        source = f"{run.info.artifact_uri}/model"
    return str(client.create_model_version(name, source, run_id=run.info.run_id).version)


def test_loads_the_production_version_with_its_signature(registry: str) -> None:
    polling, models, loads = poller(registry, LATENCY)
    polling.poll_once()
    current = models[LATENCY].current
    assert current is not None and current.version == "1"
    assert current.columns == SCHEMA_COLUMNS
    polling.poll_once()  # nothing changed: nothing reloaded
    assert loads.calls == [(LATENCY, None, "1")]


@pytest.fixture
def model_server() -> Iterator[ModelServerPing]:
    ping = ModelServerPing()
    yield ping
    ping.close()


def test_the_version_that_answers_wins_over_the_alias(
    registry: str, client: MlflowClient, model_server: ModelServerPing
) -> None:
    """During a rollout the alias names the new version, the model server still answers as the old."""
    model_server.version = "1"
    polling, models, loads = poller(registry, LATENCY, upstream=model_server.url)
    polling.poll_once()
    version = new_version(client, LATENCY)
    client.set_registered_model_alias(LATENCY, PRODUCTION, version)
    try:
        polling.poll_once()
        assert models[LATENCY].current.version == "1"  # type: ignore[union-attr]
        model_server.version = version
        polling.poll_once()
        current = models[LATENCY].current
        assert current is not None and current.version == version
        model_server.version = None  # a server that names no version: the alias's
        client.set_registered_model_alias(LATENCY, PRODUCTION, "1")
        polling.poll_once()
        assert loads.calls == [(LATENCY, None, "1"), (LATENCY, "1", version), (LATENCY, version, "1")]
    finally:
        client.set_registered_model_alias(LATENCY, PRODUCTION, "1")


def test_a_version_without_signature_is_checked_against_the_schema(
    registry: str, client: MlflowClient, caplog: pytest.LogCaptureFixture
) -> None:
    version = new_version(client, LATENCY, signature=False)
    client.set_registered_model_alias(LATENCY, PRODUCTION, version)
    try:
        polling, models, _ = poller(registry, LATENCY)
        with caplog.at_level(logging.WARNING, logger="services.gateway.registry"):
            polling.poll_once()
        current = models[LATENCY].current
        assert current is not None and current.version == version and current.columns == SCHEMA_COLUMNS
        assert "no column signature: records are checked against the schema" in caplog.text
    finally:
        client.set_registered_model_alias(LATENCY, PRODUCTION, "1")


def test_a_missing_alias_or_model_is_reported_once_and_loads_nothing(
    registry: str, client: MlflowClient, caplog: pytest.LogCaptureFixture
) -> None:
    client.create_registered_model("no-alias-yet")
    polling, models, loads = poller(registry, "no-alias-yet", "never-registered")
    with caplog.at_level(logging.WARNING, logger="services.gateway.registry"):
        polling.poll_once()
        polling.poll_once()
    assert all(m.current is None for m in models.values()) and loads.calls == []
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # once per model, not once per poll
    assert messages == [
        "registry: no-alias-yet has no 'production' alias yet (nothing loaded yet)",
        "registry: never-registered is not registered yet (nothing loaded yet)",
    ]


def test_an_unreachable_tracking_server_keeps_what_is_served(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with tracking_uri_restored():
        polling, models, _ = poller(f"http://127.0.0.1:{free_port()}", LATENCY)
        kept: Any = ServedVersion("7", "run", SCHEMA_COLUMNS)
        models[LATENCY].current = kept
        with caplog.at_level(logging.WARNING, logger="services.gateway.registry"):
            polling.poll_once()
        assert models[LATENCY].current is kept
        assert "tracking server unreachable" in caplog.text and "keeps serving v7" in caplog.text
