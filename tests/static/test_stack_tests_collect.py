"""The e2e checks (tests/stack) import and collect outside a running stack, so a mistake in them
fails here in seconds instead of after `make e2e` has spent ten minutes bringing the stack up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, python_env


def test_every_stack_test_is_collected(tmp_path: Path) -> None:
    env_file = tmp_path / "e2e.env"
    subprocess.run([sys.executable, "infra/stack.py", "env", "--file", str(env_file)], cwd=ROOT, check=True)
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/stack"],
        cwd=ROOT,
        env={**python_env(), "COMPOSE_PROJECT_NAME": "collect-only", "MLOPS_ENV_FILE": str(env_file)},
        capture_output=True,
        text=True,
    )
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-2000:]
    tests = [line for line in collected.stdout.splitlines() if "::test_" in line]
    assert len(tests) >= 20 and all(line.startswith("tests/stack/") for line in tests), collected.stdout
