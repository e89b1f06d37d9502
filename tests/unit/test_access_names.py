"""Reserved participant names (services/access): no participant takes a platform name.

A participant's name is their MLflow login and the experiment they MANAGE; the refusals against a
live server (an existing experiment of someone else's) are in tests/integration/test_access.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.experiments import RETRAINING_EXPERIMENT
from contracts.models import MODEL_NAMES
from services.access import RESERVED_NAMES, SERVICE_ACCOUNTS, AccessError, check_name, read_roster
from services.access.__main__ import main


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("retraining", "retrained production models"),
        ("admin", "admin login"),
        ("default", "Default experiment"),
        ("trainer", "service account"),
        ("orchestrator", "service account"),
        ("prometheus", "service account"),
        ("latency-predictor", "registered model"),
        ("bandwidth-efficiency-predictor", "registered model"),
    ],
)
def test_platform_names_are_refused_with_the_reason(name: str, why: str) -> None:
    with pytest.raises(AccessError, match=f"participant name '{name}' is reserved: .*{why}") as refused:
        check_name(name)
    assert "\n" not in str(refused.value)


def test_every_platform_name_is_reserved() -> None:
    assert RETRAINING_EXPERIMENT == "retraining"
    assert {RETRAINING_EXPERIMENT, "admin", *MODEL_NAMES} <= set(RESERVED_NAMES)
    assert {account.name for account in SERVICE_ACCOUNTS} <= set(RESERVED_NAMES)


def test_the_operators_experiment_is_refused() -> None:
    with pytest.raises(AccessError, match="'ops' is reserved: the operator's experiment"):
        check_name("ops", ["ops", "nightly"])
    with pytest.raises(AccessError, match="'nightly' is reserved"):
        check_name("nightly", [" ops", "nightly "])
    assert check_name("alice", ["ops"]) == "alice"


@pytest.mark.parametrize("name", ["Alice", "a", "-x", "a b", "x" * 33, "../etc"])
def test_names_outside_the_pattern_are_refused(name: str) -> None:
    with pytest.raises(AccessError, match="use 2-32 characters"):
        check_name(name)


def test_a_roster_with_a_platform_name_names_the_file_and_the_name(tmp_path: Path) -> None:
    roster = tmp_path / "participants.txt"
    roster.write_text("# team\nalice\nbob  # second\n")
    assert read_roster(roster, ["ops"]) == ["alice", "bob"]
    roster.write_text("alice\nretraining\n")
    with pytest.raises(AccessError, match=f"{roster}: participant name 'retraining' is reserved"):
        read_roster(roster)
    roster.write_text("alice\nops\n")
    with pytest.raises(AccessError, match="'ops' is reserved: the operator's experiment"):
        read_roster(roster, ["ops"])


@pytest.mark.parametrize(
    ("name", "env"),
    [
        ("retraining", {}),
        ("trainer", {}),
        ("ops", {"PARTICIPANT": "ops"}),
        ("nightly", {"ACCESS_TRAINER_EXPERIMENTS": "ops,nightly", "PARTICIPANT": "ops"}),
    ],
)
def test_make_participant_refuses_in_one_line_before_asking_the_server(
    name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in ("ACCESS_TRAINER_EXPERIMENTS", "PARTICIPANT", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # No server listens there and no admin password is set: the name is refused first.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert main(["add", name]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.count("\n") == 1
    assert out.err.startswith(f"access: error: participant name '{name}' is reserved: ")
