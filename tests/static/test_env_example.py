"""`.env.example` is generated from the settings classes (infra/env_example.py): it must be what they
declare now, and hold every variable docker-compose.yml requires."""

from __future__ import annotations

import importlib.util
import re
import sys

from tests.static.conftest import COMPOSE_FILE, REPO, REQUIRED_VAR

spec = importlib.util.spec_from_file_location("env_example", REPO / "infra" / "env_example.py")
assert spec and spec.loader
env_example = importlib.util.module_from_spec(spec)
sys.modules["env_example"] = env_example
spec.loader.exec_module(env_example)


def test_env_example_is_up_to_date_with_the_settings_classes() -> None:
    committed = (REPO / ".env.example").read_text()
    assert committed == env_example.render(), (
        ".env.example is out of date with the settings classes: run `make env-example` and commit it"
    )


def test_env_example_holds_every_variable_compose_requires() -> None:
    names = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.M))
    required = set(REQUIRED_VAR.findall(COMPOSE_FILE.read_text()))
    assert required <= names, f"docker-compose.yml requires {sorted(required - names)}: add them to SECTIONS"


def test_every_setting_in_env_example_is_a_described_field_named_once() -> None:
    fields = env_example.declarations()
    names = [name for _, section in env_example.SECTIONS for name in section]
    assert len(names) == len(set(names)), "a variable is in two sections"
    for name in names:
        assert name in fields and fields[name].description, f"{name}: no described declaration"
