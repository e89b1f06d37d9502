"""The contracts package: the model list agrees with the schema and the compose file, the registry's
"absent" policy holds against a real (SQLite) registry, and the settings helpers parse one way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts.models import MODELS, model_for_target
from contracts.registry import version_by_alias
from contracts.schema import TARGETS
from contracts.settings import libpq_uri, split_commas, sqlalchemy_uri
from tests.conftest import ROOT, free_port


def test_every_model_predicts_a_schema_target_and_names_are_unique() -> None:
    assert {m.target for m in MODELS} <= set(TARGETS)
    for attribute in ("name", "target", "key", "port"):
        values = [getattr(m, attribute) for m in MODELS]
        assert len(values) == len(set(values)), f"duplicate {attribute}: {values}"
    assert model_for_target("latency_ms").name == "latency-predictor"
    with pytest.raises(KeyError, match="known: latency_ms, bandwidth_efficiency"):
        model_for_target("throughput")


def test_every_model_has_its_serving_service_in_both_compose_files() -> None:
    """Adding a model is one entry in contracts/models.py plus one compose block: this says which."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    loopback = (ROOT / "infra/offline/compose.loopback.yml").read_text()  # has compose-only YAML tags
    for model in MODELS:
        assert model.service in services, f"docker-compose.yml has no {model.service} block for {model.name}"
        env = services[model.service]["environment"]
        assert env["SERVING_MODEL_NAME"] == model.name
        assert env["SERVING_PORT"] == str(model.port)
        assert f"\n  {model.service}:" in loopback, (
            f"infra/offline/compose.loopback.yml lacks {model.service}"
        )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowClient]:
    """A real registry (in-process SQLite store): model `m` v1 with alias `production`, no `staging`."""
    base = tmp_path_factory.mktemp("registry")
    store = f"sqlite:///{base / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    experiment = client.create_experiment("contracts", artifact_location=(base / "artifacts").as_uri())
    run = client.create_run(experiment)
    client.create_registered_model("m")
    client.create_model_version("m", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("m", "production", "1")
    yield client


def test_alias_lookup_treats_a_missing_model_and_a_missing_alias_alike(registry: MlflowClient) -> None:
    found = version_by_alias(registry, "m", "production")
    assert found is not None and str(found.version) == "1"
    assert version_by_alias(registry, "m", "staging") is None  # the model exists, the alias does not
    assert version_by_alias(registry, "never-registered", "production") is None


def test_alias_lookup_raises_when_the_server_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = MlflowClient(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(MlflowException):
        version_by_alias(down, "m", "production")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a", ["a"]), (" a, b ,,c ", ["a", "b", "c"]), ("x=http://h:1,y", ["x=http://h:1", "y"])],
)
def test_split_commas(value: str, expected: list[str]) -> None:
    assert split_commas(value) == expected


@pytest.mark.parametrize("value", ["", " , ,"])
def test_split_commas_refuses_an_empty_list(value: str) -> None:
    with pytest.raises(ValueError, match="at least one"):
        split_commas(value)


def test_postgres_uris_convert_both_ways() -> None:
    assert libpq_uri("postgresql+psycopg2://u:p@h:5432/db") == "postgresql://u:p@h:5432/db"
    assert libpq_uri("postgresql://u:p@h/db") == "postgresql://u:p@h/db"
    assert sqlalchemy_uri("postgresql://u:p@h/db") == "postgresql+psycopg2://u:p@h/db"
    assert sqlalchemy_uri("postgresql+psycopg2://u:p@h/db") == "postgresql+psycopg2://u:p@h/db"
    assert sqlalchemy_uri("sqlite:///x.db") == "sqlite:///x.db"
