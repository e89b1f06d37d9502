"""In the running stack the orchestrator holds no Docker socket: it reaches the Engine API only
through docker-socket-proxy, which refuses what the orchestrator never calls (docs/closed-loop.md,
"The Docker socket"). The closed loop (test_closed_loop.py) runs its trainer containers through it."""

from __future__ import annotations

import json
import subprocess

from tests.stack.stack import ROOT


def compose(*args: str) -> str:
    done = subprocess.run(["docker", "compose", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"docker compose {' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout


def mounts(service: str) -> list[str]:
    """Host paths mounted into the running container of `service`."""
    container = compose("ps", "-q", service).strip()
    assert container, f"{service} is not running"
    inspected = subprocess.run(
        ["docker", "inspect", "--format", "{{json .Mounts}}", container],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return [str(mount.get("Source")) for mount in json.loads(inspected.stdout)]


def test_the_orchestrator_has_no_docker_socket_and_the_proxy_filters() -> None:
    assert not [m for m in mounts("orchestrator") if m.endswith("docker.sock")], mounts("orchestrator")
    probe = (
        "import docker, sys\n"
        "client = docker.from_env(timeout=30)\n"
        "assert client.ping()\n"
        "try:\n"
        "    client.containers.list()\n"
        "except docker.errors.APIError as exc:\n"
        "    sys.exit(0 if exc.status_code == 403 else 1)\n"
        "sys.exit(1)\n"
    )
    done = subprocess.run(
        ["docker", "compose", "exec", "-T", "orchestrator", "python", "-c", probe],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
