"""Running one retraining: `mlflow run` of the trainer's `retrain` entry point, in a container of the
trainer image (Docker Engine API, docker SDK) or, in local mode, as a process.

Threat model. Access to the Docker socket is root on the host: whoever can make the orchestrator
start an arbitrary container (a host mount, `--privileged`, another image) owns the machine. So the
only door to Docker is `DockerRunner.start`, which checks every container request against a fixed
policy before the Engine API is called: the configured trainer image only; `mlflow run` of the
trainer project only, with parameters from the entry point's list and plain values; the configured
network; no mounts, devices, privileges or added capabilities; the image's non-root user, every
capability dropped, `no-new-privileges`, a read-only root file system with a private /tmp, and
memory (no extra swap), CPU and process limits: what docker-compose.yml gives every service.
Nothing a client sends reaches Docker except validated parameter values (the HTTP API takes a model
name, a reason and a candidate list). The orchestrator holds no Docker socket: it reaches the Engine
API through docker-socket-proxy, which passes only the calls made here (docker-socket-proxy/haproxy.cfg).
What remains: the orchestrator's own code and image are trusted, as the proxy reads no request
bodies, so a compromised orchestrator could still create a container of its choosing; keep its image
ours and its port internal (docs/closed-loop.md, "The Docker socket").
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from services.orchestrator import Settings

PROJECT_DIR = "/app/trainer"  # where the trainer image holds trainer/MLproject
ENTRY_POINT = "retrain"
# The `retrain` entry point's parameters (trainer/MLproject); nothing else is passed.
PARAMETERS = frozenset(
    {
        "target", "models", "reference_rows", "seed", "production_data", "holdout_data", "trigger",
        "gate_min_improvement", "gate_min_rows", "gate_max_test_regression", "gate_max_reference_regression",
    }
)  # fmt: skip
# Parameter values: URIs, numbers, names and comma lists; no spaces, quotes or shell syntax.
PLAIN_VALUE = re.compile(r"^[\w.,:/@+=-]{1,300}$")
# Environment variables a trainer container may receive.
ENVIRONMENT = frozenset(
    {
        "MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY", "TRAINER_IMAGE_DIGEST", "GIT_COMMIT", "HOME",
        # The orchestrator's own MLflow login (services/access grants it what a retraining needs);
        # through the environment, never on the container's command line.
        "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    }
)  # fmt: skip
# docker SDK `containers.run` arguments the policy knows; any other argument is refused.
ALLOWED_ARGUMENTS = frozenset(
    {
        "image", "entrypoint", "command", "environment", "network", "network_mode", "extra_hosts",
        "mem_limit", "memswap_limit", "nano_cpus", "pids_limit", "cap_drop", "security_opt",
        "read_only", "tmpfs", "labels", "detach", "name", "user",
    }
)  # fmt: skip
# The trainer image's `app` user (trainer/Dockerfile), by number so no image can map it to root.
USER = "1000:1000"
LABEL = "org.mlops.role"


class PolicyError(ValueError):
    """A container request the orchestrator may not make."""


@dataclass(frozen=True)
class Job:
    """One retraining: the `retraining` run it logs into and the entry point's parameters."""

    run_id: str
    params: dict[str, str]

    def project_args(self, project_dir: str) -> list[str]:
        """`mlflow run` arguments (after `mlflow`)."""
        args = ["run", project_dir, "-e", ENTRY_POINT, "--env-manager", "local", "--run-id", self.run_id]
        for key, value in sorted(self.params.items()):
            args += ["-P", f"{key}={value}"]
        return args


def check_job(job: Job) -> None:
    """Refuse a run id or parameters outside the entry point's contract."""
    if not re.fullmatch(r"[0-9a-f]{32}", job.run_id):
        raise PolicyError(f"run id {job.run_id!r} is not an MLflow run id")
    unknown = sorted(set(job.params) - PARAMETERS)
    if unknown:
        raise PolicyError(f"unknown trainer parameters {unknown}")
    for key, value in job.params.items():
        if not PLAIN_VALUE.match(value):
            raise PolicyError(f"parameter {key}={value!r} is not a plain value")


@dataclass
class Outcome:
    exit_code: int
    image_digest: str
    logs: str


class Runner(Protocol):
    def run(self, job: Job) -> Outcome: ...


class DockerRunner:
    """Starts the trainer image through the Docker Engine API, within the policy above."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        if not settings.trainer_image:
            raise ValueError("TRAINER_IMAGE is not set: the docker runner needs the trainer image")
        self.settings = settings
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker  # only this runner needs the SDK

            self._client = docker.from_env(timeout=60)
        return self._client

    def container_request(self, job: Job, digest: str) -> dict[str, Any]:
        """The `containers.run` arguments for `job`: everything but the parameter values is fixed."""
        s = self.settings
        network: dict[str, Any] = (
            {"network_mode": "host"} if s.trainer_network == "host" else {"network": s.trainer_network}
        )
        hosts = dict(item.split("=", 1) for item in s.trainer_extra_hosts.split(",") if "=" in item)
        return {
            "image": s.trainer_image,
            "entrypoint": ["mlflow"],
            "command": job.project_args(PROJECT_DIR),
            "environment": {
                "MLFLOW_TRACKING_URI": s.trainer_tracking_uri,
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "TRAINER_IMAGE_DIGEST": digest,
                "HOME": "/tmp",
                **{
                    key: os.environ[key]
                    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
                    if os.environ.get(key)
                },
            },
            **network,
            **({"extra_hosts": hosts} if hosts else {}),
            "user": USER,
            "mem_limit": s.trainer_memory,
            "memswap_limit": s.trainer_memory,
            "nano_cpus": int(s.trainer_cpus * 1e9),
            "pids_limit": s.trainer_pids,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "tmpfs": {"/tmp": "rw,size=1g"},
            "labels": {LABEL: "retraining", "org.mlops.run_id": job.run_id},
            "detach": True,
        }

    def check(self, request: dict[str, Any]) -> None:
        """Refuse any container request but a trainer run within the policy (module docstring)."""
        s = self.settings
        unknown = sorted(set(request) - ALLOWED_ARGUMENTS)
        if unknown:
            raise PolicyError(f"refused container arguments {unknown}: only the trainer policy's are allowed")
        if request.get("image") != s.trainer_image:
            raise PolicyError(f"refused image {request.get('image')!r}: only {s.trainer_image} may run")
        command = list(request.get("command") or [])
        fixed = ["run", PROJECT_DIR, "-e", ENTRY_POINT, "--env-manager", "local", "--run-id"]
        if request.get("entrypoint") != ["mlflow"] or command[: len(fixed)] != fixed or len(command) < 8:
            raise PolicyError("refused command: only `mlflow run` of the trainer's retrain entry point")
        params = {}
        rest = command[len(fixed) + 1 :]
        if len(rest) % 2:
            raise PolicyError("refused command: malformed parameters")
        for flag, pair in zip(rest[::2], rest[1::2], strict=True):
            key, sep, value = pair.partition("=")
            if flag != "-P" or not sep:
                raise PolicyError(f"refused command argument {flag} {pair}")
            params[key] = value
        check_job(Job(command[len(fixed)], params))
        if sorted(request.get("environment", {})) != sorted(
            set(request.get("environment", {})) & ENVIRONMENT
        ):
            raise PolicyError(f"refused environment: only {sorted(ENVIRONMENT)}")
        expected_network = (
            request.get("network_mode") == "host"
            if s.trainer_network == "host"
            else request.get("network") == s.trainer_network and "network_mode" not in request
        )
        if not expected_network:
            raise PolicyError(f"refused network: only {s.trainer_network!r}")
        hardening = {
            "user": USER,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "mem_limit": s.trainer_memory,
            "memswap_limit": s.trainer_memory,
            "pids_limit": s.trainer_pids,
        }
        for key, value in hardening.items():
            if request.get(key) != value:
                raise PolicyError(f"refused {key}={request.get(key)!r}: the policy requires {value!r}")
        if not request.get("nano_cpus") or request["nano_cpus"] > int(s.trainer_cpus * 1e9):
            raise PolicyError("refused CPU limit: required, at most TRAINER_CPUS")
        if set(request.get("tmpfs", {})) - {"/tmp"}:
            raise PolicyError("refused tmpfs: only /tmp")

    def start(self, request: dict[str, Any]) -> Any:
        """The only call that reaches the Docker Engine: checked first, always."""
        self.check(request)
        return self.client.containers.run(**request)

    def image_digest(self) -> str:
        """The trainer image's content digest (a repository digest when it came from a registry)."""
        image = self.client.images.get(self.settings.trainer_image)
        digests = image.attrs.get("RepoDigests") or []
        return str(digests[0] if digests else image.id)

    def run(self, job: Job) -> Outcome:
        digest = self.image_digest()
        container = self.start(self.container_request(job, digest))
        timeout = self.settings.trainer_timeout_s
        try:
            try:
                code = int(container.wait(timeout=timeout).get("StatusCode", 1))
                note = ""
            except Exception:  # the Engine API's read timed out: the trainer ran too long
                container.stop(timeout=10)
                code, note = 124, f"\norchestrator: the trainer timed out after {timeout:.0f} s\n"
            return Outcome(code, digest, container.logs().decode(errors="replace") + note)
        finally:
            with contextlib.suppress(Exception):  # already gone: nothing to clean
                container.remove(force=True)


class ProcessRunner:
    """Local mode: the same `mlflow run`, as a child process of the orchestrator."""

    def __init__(self, settings: Settings, project_dir: Path, env: dict[str, str]) -> None:
        self.settings, self.project_dir, self.env = settings, project_dir, env

    def run(self, job: Job) -> Outcome:
        check_job(job)
        digest = f"process:python-{sys.version_info.major}.{sys.version_info.minor}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", *job.project_args(str(self.project_dir))],
            env={**self.env, "MLFLOW_TRACKING_URI": self.settings.trainer_tracking_uri,
                 "TRAINER_IMAGE_DIGEST": digest},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
        reader.start()
        try:
            proc.wait(self.settings.trainer_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            output.append(f"orchestrator: trainer timed out after {self.settings.trainer_timeout_s:.0f} s\n")
        reader.join(10)
        return Outcome(proc.returncode, digest, "".join(output))
