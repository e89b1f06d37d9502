"""The host-side helpers behind `make up`: .env generation, secret checks, readiness logic."""

from __future__ import annotations

import importlib.util
import json
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from services.gateway.auth import parse_keys
from tests.conftest import ROOT

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


def test_the_example_placeholders_are_refused_even_for_a_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """.env.example's secrets are placeholders: a .env copied from it never starts the stack."""
    monkeypatch.setenv("ALLOW_WEAK_SECRETS", "1")
    example = stack.read_env(stack.ENV_EXAMPLE)
    assert len(stack.SECRET_KEYS) >= 19 and {"POSTGRES_PASSWORD", "CONTROL_TOKEN"} <= set(stack.SECRET_KEYS)
    problem = stack.check_env(example)
    assert problem is not None and "placeholder" in problem
    assert stack.SECRET_PLACEHOLDER not in stack.env_template()


def test_the_env_holds_this_machines_values() -> None:
    values = dict(
        line.split("=", 1) for line in stack.env_template().splitlines() if line and not line.startswith("#")
    )
    assert values["SERVING_WORKERS"] == str(stack.serving_workers())
    assert values["PARTICIPANT"] == stack._participant()
    assert values["S3_ACCESS_KEY"].startswith("mlops-") and stack.RANDOM_HEX not in values["S3_ACCESS_KEY"]


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
    assert stack.one_shot_jobs() == {
        "chown-s3-data", "create-bucket", "create-databases", "create-accounts", "create-grafana-viewer",
        "trainer",
    }  # fmt: skip


# --- which compose files: registry images, or local stand-ins on loopback -------------------------


def never_probed() -> str | None:
    raise AssertionError("the registry must not be probed when the choice is already made")


@pytest.mark.parametrize(
    ("environ", "values", "files", "remember"),
    [
        ({"OFFLINE": "1"}, {}, stack.LOOPBACK_FILES, True),
        ({"OFFLINE": "1"}, {"COMPOSE_FILE": stack.REGISTRY_FILES}, stack.LOOPBACK_FILES, True),
        ({"OFFLINE": "0"}, {"COMPOSE_FILE": stack.LOOPBACK_FILES}, stack.REGISTRY_FILES, True),
        ({"COMPOSE_FILE": "a.yml:b.yml"}, {"COMPOSE_FILE": stack.REGISTRY_FILES}, "a.yml:b.yml", False),
        ({"OFFLINE": ""}, {"COMPOSE_FILE": stack.LOOPBACK_FILES}, stack.LOOPBACK_FILES, False),
    ],
)
def test_an_explicit_or_remembered_choice_is_kept_without_probing(
    environ: dict[str, str], values: dict[str, str], files: str, remember: bool
) -> None:
    choice = stack.choose_compose_files(environ, values, never_probed)
    assert (choice.files, choice.remember, choice.note) == (files, remember, "")


def test_without_a_choice_the_registry_is_probed_and_the_answer_remembered() -> None:
    online = stack.choose_compose_files({}, {}, lambda: None)
    assert (online.files, online.remember, online.loopback) == (stack.REGISTRY_FILES, True, False)
    offline = stack.choose_compose_files({}, {}, lambda: "docker pull x failed: connection refused")
    assert (offline.files, offline.remember, offline.loopback) == (stack.LOOPBACK_FILES, True, True)
    assert len(offline.note.splitlines()) == 1
    assert "connection refused" in offline.note and "stand-in" in offline.note


def fake_run(
    returncode: int = 0, stderr: str = "", timeout_output: str | None = None
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Stands in for stack._run: an exit code and stderr, or a timeout after some output."""

    def run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        if timeout_output is not None:
            raise subprocess.TimeoutExpired(cmd, timeout, output=timeout_output)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    return run


def test_pull_problem_tells_a_failing_registry_from_a_slow_download(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = 'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp: refused\n'
    monkeypatch.setattr(stack, "_run", fake_run(1, stderr=refused))
    problem = stack.pull_problem("postgres:15.14-bookworm")
    assert problem is not None and problem.endswith("dial tcp: refused") and "daemon" not in problem
    monkeypatch.setattr(stack, "_run", fake_run(0))
    assert stack.pull_problem("postgres:15.14-bookworm") is None
    downloading = "15.14-bookworm: Pulling from library/postgres\n2d429b9e7: Pulling fs layer\n"
    monkeypatch.setattr(stack, "_run", fake_run(timeout_output=downloading))
    assert stack.pull_problem("postgres:15.14-bookworm", timeout=1) is None
    monkeypatch.setattr(stack, "_run", fake_run(timeout_output=""))
    assert "no answer within 1 s" in str(stack.pull_problem("postgres:15.14-bookworm", timeout=1))


def test_registry_is_probed_only_for_a_missing_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGISTRY_PROBE_IMAGE", raising=False)
    images = ["postgres:15.14-bookworm", "prom/prometheus:v2.53.0"]
    monkeypatch.setattr(stack, "third_party_images", lambda: images)
    pulled: list[str] = []
    monkeypatch.setattr(stack, "pull_problem", lambda image: pulled.append(image) or "refused")

    labels: dict[str, str | None] = {images[0]: "", images[1]: ""}  # both here, pulled for real
    monkeypatch.setattr(stack, "image_label", labels.get)
    assert stack.registry_problem() is None and pulled == []
    labels[images[1]] = "sha256-of-inputs"  # a stand-in: an earlier run found no registry
    assert stack.registry_problem() == "an earlier run built them here"
    labels[images[1]] = None  # missing: ask a registry for it
    assert stack.registry_problem() == "refused" and pulled == [images[1]]
    monkeypatch.setenv("REGISTRY_PROBE_IMAGE", "127.0.0.1:9/probe:none")
    stack.registry_problem()
    assert pulled[-1] == "127.0.0.1:9/probe:none"


def test_the_choice_is_remembered_in_env_where_compose_reads_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    stack.main(["env", "--file", str(env)])
    assert stack.remember_compose_files(env, stack.LOOPBACK_FILES)
    assert not stack.remember_compose_files(env, stack.LOOPBACK_FILES), "written twice"
    assert stack.read_env(env)["COMPOSE_FILE"] == stack.LOOPBACK_FILES
    lines = env.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"setting without a comment: {line}"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600

    # Plain `docker compose` (as `make train` runs it) now uses the loopback override.
    monkeypatch.setenv("COMPOSE_ENV_FILES", str(env))
    monkeypatch.delenv("COMPOSE_FILE", raising=False)
    config = json.loads(stack._compose("config", "--format", "json").stdout)
    assert config["services"]["mlflow"]["network_mode"] == "host"

    assert stack.remember_compose_files(env, stack.REGISTRY_FILES)  # OFFLINE=0: replaced in place
    assert env.read_text().count("COMPOSE_FILE=") == 1
    assert stack.read_env(env)["COMPOSE_FILE"] == stack.REGISTRY_FILES
    config = json.loads(stack._compose("config", "--format", "json").stdout)
    assert "network_mode" not in config["services"]["mlflow"]


def test_without_docker_make_up_says_so_in_one_line_and_names_make_local(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    stack.main(["env", "--file", str(env)])
    done = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "stack.py"), "preflight"],
        env={"PATH": str(tmp_path), "MLOPS_ENV_FILE": str(env)}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert "make local" in done.stderr


def test_make_help_lists_every_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:((?:.*\\\n)*.*)$", makefile, re.MULTILINE)
    assert phony is not None
    targets = set(phony.group(1).replace("\\", " ").split())
    assert {"e2e", "up", "test"} <= targets
    defined = set(re.findall(r"^([a-z0-9][a-z0-9-]*):", makefile, re.MULTILINE))
    assert defined == targets, "every target is .PHONY and every .PHONY target exists"
    listed = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True
    )
    shown = {line.split()[1] for line in listed.stdout.splitlines() if line.startswith("  make ")}
    assert shown == targets, f"make help misses {sorted(targets - shown)}"


def test_test_tools_names_the_command_to_run_when_it_cannot_install(tmp_path: Path) -> None:
    """Not root (or no apt-get): one line naming the apt-get command; nothing is skipped later."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ls", "bash", "mktemp"):
        (bin_dir / tool).symlink_to(f"/bin/{tool}" if Path(f"/bin/{tool}").exists() else f"/usr/bin/{tool}")
    fake_id = bin_dir / "id"
    fake_id.write_text("#!/bin/sh\necho 1000\n")
    fake_id.chmod(0o755)
    done = subprocess.run(
        ["/bin/bash", str(ROOT / "infra" / "test-tools.sh")],
        env={"PATH": str(bin_dir)}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert "sudo apt-get install -y --no-install-recommends" in line
    assert "prometheus prometheus-alertmanager" in line and "make test" in line


def test_an_older_env_gets_the_new_secrets_without_losing_its_own(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("# old\nPOSTGRES_PASSWORD=keep-this-old-password\n")
    assert stack.main(["env", "--file", str(path)]) == 0
    values = stack.read_env(path)
    assert values["POSTGRES_PASSWORD"] == "keep-this-old-password"
    assert len(values["MLFLOW_AUTH_ADMIN_PASSWORD"]) >= 12 and len(values["MLFLOW_TRAINER_PASSWORD"]) >= 12
    before = path.read_text()
    assert stack.main(["env", "--file", str(path)]) == 0 and path.read_text() == before  # once


def test_make_up_refuses_to_publish_an_open_gateway_beyond_loopback() -> None:
    for host in ("127.0.0.1", "localhost", "::1"):
        assert stack.unauthenticated_publication({"BIND_ADDRESS": host}, []) is None
    problem = stack.unauthenticated_publication({"BIND_ADDRESS": "0.0.0.0"}, [])
    assert problem is not None and "make gateway-key" in problem and "GATEWAY_REQUIRE_API_KEYS" in problem
    required = {"BIND_ADDRESS": "10.0.0.5", "GATEWAY_REQUIRE_API_KEYS": "true"}
    assert stack.unauthenticated_publication(required, []) is not None  # required, but no key yet
    assert stack.unauthenticated_publication(required, ["dashboard"]) is None
    assert stack.unauthenticated_publication({**required, "GATEWAY_API_KEYS": "ci=k"}, []) is None
    assert stack.unauthenticated_publication({"BIND_ADDRESS": "", "GATEWAY_API_KEYS": "ci=k"}, []) is not None


def test_gateway_keys_are_added_replaced_and_revoked_one_client_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(stack, "GATEWAY_KEYS", tmp_path / ".gateway" / "api-keys")
    assert stack.main(["gateway-key", "dashboard"]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert stack.main(["gateway-key", "ci"]) == 0
    assert stack.main(["gateway-key", "dashboard"]) == 0  # a new key replaces the old one
    second = capsys.readouterr().out.strip().splitlines()[-1]
    keys = dict(line.split("=", 1) for line in stack.GATEWAY_KEYS.read_text().splitlines())
    assert set(keys) == {"dashboard", "ci"} and keys["dashboard"] == second != first
    assert parse_keys(stack.GATEWAY_KEYS.read_text().splitlines(), "file")  # the gateway reads it
    assert stack.gateway_clients() == ["ci", "dashboard"]
    assert stack.main(["gateway-key", "--remove", "ci"]) == 0
    assert stack.gateway_clients() == ["dashboard"]
    assert stack.main(["gateway-key", "--remove", "ci"]) == 1  # nothing left to revoke
    assert stack.main(["gateway-key", "bad name!"]) == 1


# --- Secret files: readable by their container's user, never by everyone ------------------------


def secret_values() -> dict[str, str]:
    return {key: f"value-of-{key.lower()}" for key, _ in stack.SECRET_FILES.values()}


def test_as_root_each_secret_file_is_handed_to_its_containers_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "SECRETS_DIR", tmp_path / ".secrets")
    monkeypatch.setattr(stack.os, "geteuid", lambda: 0)
    monkeypatch.setattr(stack.os, "chown", lambda path, uid, gid: chowned.append((Path(path).name, uid, gid)))
    chowned: list[tuple[str, int, int]] = []
    stack.write_secret_files(secret_values())
    assert sorted(chowned) == sorted((name, *user) for name, (_, user) in stack.SECRET_FILES.items())
    for name, (key, _) in stack.SECRET_FILES.items():
        path = tmp_path / ".secrets" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == f"value-of-{key.lower()}"
    assert (tmp_path / ".secrets" / "control_token").read_text() == "value-of-control_token"
    assert stat.S_IMODE((tmp_path / ".secrets").stat().st_mode) == 0o711  # traversable, not listable


def test_another_operator_gives_the_file_the_containers_group_0640(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator whose uid is not the container's: group ownership, never world-readable."""
    secret = tmp_path / "secret"
    secret.write_text("x")
    owner = secret.stat().st_uid
    monkeypatch.setattr(stack.os, "geteuid", lambda: owner + 4242)  # not the container's user
    stack.readable_by(secret, (owner + 1, 12345))
    assert secret.stat().st_gid == 12345  # chgrp (root here can; a member of the group can too)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o640


def test_an_operator_outside_the_group_gets_one_line_saying_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "SECRETS_DIR", tmp_path / ".secrets")
    monkeypatch.setattr(stack.os, "geteuid", lambda: 4242)

    def refused(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(stack.os, "chown", refused)
    with pytest.raises(stack.NotPrivate) as raised:
        stack.write_secret_files(secret_values())
    message = str(raised.value)
    assert "\n" not in message and "not by everyone" in message
    assert message.count("sudo chgrp") == len(stack.SECRET_FILES)  # every file named at once
    for path in (tmp_path / ".secrets").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0  # still private to the operator


def test_the_control_token_is_a_random_secret_of_the_env_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    assert stack.main(["env", "--file", str(env)]) == 0
    values = stack.read_env(env)
    assert len(values["CONTROL_TOKEN"]) >= 32 and "CONTROL_TOKEN" in stack.SECRET_KEYS
    assert values["EXTRA_ALLOWED_HOSTS"] == ""


def test_make_up_ends_with_what_a_person_needs_next() -> None:
    """The MLflow link opens on model training, every login says where it is kept, the command that
    adds a participant, and the first training while it runs (issue 21)."""
    values = {"BIND_ADDRESS": "127.0.0.1", "MLFLOW_PORT": "5005"}
    lines = stack.next_steps(values, ["alice", "bob"], training=True)
    text = "\n".join(lines)
    mlflow = next(line for line in lines if "MLflow (runs, registry)" in line).split()[-1]
    assert mlflow == "http://localhost:5005/#/experiments?workflowType=machine_learning"
    assert "admin / MLFLOW_AUTH_ADMIN_PASSWORD in .env" in text
    assert ".participants/NAME.env, one file each (alice, bob)" in text
    assert "GRAFANA_VIEWER_USER / GRAFANA_VIEWER_PASSWORD" in text
    assert "make participant NAME=alice" in text
    assert f"The first training is still running ({stack.FIRST_TRAINING}): make logs S=trainer" in text
    assert "docs/workshop.md" in text and (ROOT / "docs" / "workshop.md").exists()

    done = "\n".join(stack.next_steps({}, [], training=False))
    assert "first training" not in done
    assert "(none yet)" in done
    assert "http://localhost:5000/#/experiments?workflowType=machine_learning" in done


def test_make_up_prints_the_next_steps(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`infra/stack.py urls` (the end of `make up`) prints them; without Docker it still works."""
    monkeypatch.setattr(stack, "compose_state", lambda: [{"Service": "trainer", "State": "running"}])
    assert stack.main(["urls"]) == 0
    assert "The first training is still running" in capsys.readouterr().out

    def no_docker() -> list[dict[str, object]]:
        raise FileNotFoundError("docker")

    monkeypatch.setattr(stack, "compose_state", no_docker)
    assert stack.main(["urls"]) == 0
    out = capsys.readouterr().out
    assert "workflowType=machine_learning" in out and "first training" not in out
