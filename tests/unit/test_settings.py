"""How services read settings (contracts/settings.py): prefixes, nested classes, one-line errors."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from pydantic_settings import BaseSettings

from contracts.settings import EnvSettings, SettingsError, env_fields
from services.gateway import Settings as Gateway
from services.orchestrator import Settings as Orchestrator
from tests.conftest import ROOT, python_env

SERVICE_SETTINGS = [
    "services.backup.settings", "services.dbinit.settings", "services.gateway.settings",
    "services.monitor.settings", "services.orchestrator.settings", "services.reports.settings",
    "services.s3init.settings", "services.serving.settings", "trainer.config",
]  # fmt: skip


def all_classes() -> list[type[BaseSettings]]:
    found: dict[str, type[BaseSettings]] = {}
    for name in SERVICE_SETTINGS:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseSettings) and value is not BaseSettings:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def test_every_settings_class_names_its_variables_by_prefix_and_field_alone() -> None:
    """No per-field aliases: a field's variable is `<env_prefix><FIELD NAME>`, and each is described."""
    classes = all_classes()
    assert len(classes) > 10
    for cls in classes:
        assert issubclass(cls, EnvSettings), f"{cls.__qualname__} does not derive from EnvSettings"
        for name, field in cls.model_fields.items():
            assert field.alias is None and field.validation_alias is None, (
                f"{cls.__qualname__}.{name} has an alias"
            )
            nested = isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings)
            assert nested or field.description, f"{cls.__qualname__}.{name} has no description"


def test_a_variable_is_read_by_its_prefixed_name_also_in_nested_classes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("GATEWAY_MAX_ROWS", "7")
    monkeypatch.setenv("LOG_BATCH_SIZE", "3")
    monkeypatch.setenv("EXTRA_ALLOWED_HOSTS", "a.example")
    settings = Gateway()  # type: ignore[call-arg]
    assert (settings.max_rows, settings.log.batch_size) == (7, 3)
    assert settings.mlflow.tracking_uri == "http://mlflow:5000"
    assert settings.guard.extra_allowed_hosts == "a.example"
    names = dict(env_fields(Gateway))
    assert {"GATEWAY_MAX_ROWS", "LOG_BATCH_SIZE", "MLFLOW_TRACKING_URI", "MONITORING_DB_URI"} <= set(names)


def test_from_env_takes_variable_names_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCH_S", "120")
    settings = Orchestrator.from_env(
        {"MLFLOW_TRACKING_URI": "http://t", "MONITORING_DB_URI": "", "GATE_MIN_LABELLED_ROWS": "5"}
    )
    assert (settings.gate.min_labelled_rows, settings.watch.s, settings.monitoring.db_uri) == (5, 120.0, "")


def test_every_problem_is_one_line_naming_each_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("GATEWAY_MAX_ROWS", "zero")
    monkeypatch.setenv("LOG_BATCH_SIZE", "0")
    with pytest.raises(SettingsError) as raised:
        Gateway()  # type: ignore[call-arg]
    problem = str(raised.value)
    assert "\n" not in problem
    for name in ("GATEWAY_MAX_ROWS: ", "LOG_BATCH_SIZE: ", "MLFLOW_TRACKING_URI: Field required"):
        assert name in problem


def test_a_service_exits_non_zero_with_that_line() -> None:
    env = {**python_env(), "MLFLOW_TRACKING_URI": "http://127.0.0.1:1", "GATEWAY_BATCH_MAX_ROWS": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "services.gateway"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "gateway: error: invalid settings: GATEWAY_BATCH_MAX_ROWS: Input should be greater than or equal to 1"
    ]
