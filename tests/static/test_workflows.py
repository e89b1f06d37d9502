"""The GitHub workflows: CI (ci.yml) runs on every push and pull request, whatever the paths, and
covers every kind of test `make test` knows; each step is a make target that exists. The retraining
pipeline (retrain.yml) has its own triggers and is checked in tests/integration/test_pipeline.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / ".github/workflows/ci.yml"


def workflow(path: Path) -> dict[Any, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def runs(path: Path) -> list[str]:
    return [step.get("run", "") for job in workflow(path)["jobs"].values() for step in job["steps"]]


def test_ci_runs_on_every_push_and_pull_request_unfiltered() -> None:
    triggers = workflow(CI)[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) >= {"push", "pull_request"}
    for event in ("push", "pull_request"):
        filters = triggers[event] or {}
        narrowing = {"paths", "paths-ignore", "branches", "branches-ignore", "tags"} & set(filters)
        assert not narrowing, f"ci.yml narrows {event} by {sorted(narrowing)}: CI runs on every change"


def test_ci_runs_lint_and_every_test_kind() -> None:
    commands = " ".join(runs(CI))
    assert "make lint" in commands
    tested = set(re.findall(r"\btests/([a-z]+)", commands))
    assert tested >= {"static", "unit", "model", "integration"}, tested


def test_every_make_target_ci_calls_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = [t for run in runs(CI) for t in re.findall(r"\bmake ([a-z][a-z0-9-]*)", run)]
    assert targets
    missing = [t for t in targets if not re.search(rf"^{re.escape(t)}:", makefile, re.M)]
    assert not missing, f"ci.yml calls make targets the Makefile lacks: {missing}"
    scripts = [s for run in runs(CI) for s in re.findall(r"\b(infra/[\w./-]+\.sh)", run)]
    assert all((ROOT / s).is_file() for s in scripts), scripts
