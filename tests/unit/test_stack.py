"""The host-side helpers behind `make up`: .env generation, secret checks, readiness logic."""

from __future__ import annotations

import importlib.util
import re
import shutil
import stat
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require

spec = importlib.util.spec_from_file_location("stack", ROOT / "infra" / "stack.py")
assert spec and spec.loader
stack = importlib.util.module_from_spec(spec)
sys.modules["stack"] = stack
spec.loader.exec_module(stack)

COMPOSE_VARS = set(re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "docker-compose.yml").read_text()))


def test_env_is_generated_once_with_random_commented_settings(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    assert stack.main(["env", "--file", str(env)]) == 0
    first = env.read_text()
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert stack.main(["env", "--file", str(env)]) == 0
    assert env.read_text() == first, "an existing .env must never be overwritten"

    values = stack.read_env(env)
    assert set(values) >= COMPOSE_VARS, f"compose needs {COMPOSE_VARS - set(values)}"
    assert stack.check_env(values) is None
    lines = first.splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"setting without a comment: {line}"

    other = tmp_path / "other.env"
    stack.main(["env", "--file", str(other)])
    for key in stack.SECRET_KEYS:
        assert stack.read_env(other)[key] != values[key], f"{key} is not random"


@pytest.mark.parametrize("weak", ["minioadmin", "admin", "password1234", "short"])
def test_weak_or_default_secrets_are_refused(weak: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALLOW_WEAK_SECRETS", raising=False)
    values = {key: "a-long-random-secret-value" for key in stack.SECRET_KEYS}
    values["S3_SECRET_KEY"] = weak
    problem = stack.check_env(values)
    assert problem is not None and "S3_SECRET_KEY" in problem


def test_readiness_needs_healthy_services_and_successful_jobs() -> None:
    rows = [
        {"Service": "postgres", "State": "running", "Health": "healthy"},
        {"Service": "mlflow", "State": "running", "Health": "starting"},
        {"Service": "create-bucket", "State": "exited", "ExitCode": 0},
        {"Service": "trainer", "State": "running", "Health": ""},
    ]
    jobs = {"create-bucket", "trainer"}
    waiting, failed = stack.pending(rows, jobs)
    assert waiting == ["mlflow (starting)", "trainer"] and failed == []
    rows[1]["Health"] = "healthy"
    rows[3] = {"Service": "trainer", "State": "exited", "ExitCode": 1}
    waiting, failed = stack.pending(rows, jobs)
    assert waiting == [] and failed == ["trainer (exit 1)"]


def test_busy_port_is_detected() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert stack.port_busy("127.0.0.1", sock.getsockname()[1])


def test_jobs_are_the_services_without_a_restart_policy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    stack.main(["env", "--file", str(env)])
    monkeypatch.setenv("COMPOSE_ENV_FILES", str(env))
    monkeypatch.delenv("COMPOSE_FILE", raising=False)
    require("docker (with the compose plugin)", shutil.which("docker"))
    assert stack.one_shot_jobs() == {"create-bucket", "create-databases", "trainer"}
