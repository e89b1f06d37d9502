"""Running one retraining: `mlflow run` of the trainer's `retrain` entry point, in a container of the
trainer image (Docker Engine API, docker SDK; on Kubernetes a Job, official `kubernetes` client) or,
in local mode, as a process. Every runner implements `Runner.run`.

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

On Kubernetes (`KubernetesRunner`) the same policy shapes a Job, checked by `KubernetesRunner.check`
before the API is called: the trainer image, `mlflow run` of the entry point, the same environment
(the MLflow password by reference to the platform's Secret, never as a value in the Job), the image's
user 1000 as non-root, no privilege escalation, every capability dropped, a read-only root file system
with an emptyDir /tmp, no host namespaces or volumes, no service account token, memory and CPU
limits. The orchestrator's ServiceAccount may only create, read and delete Jobs and read their pods'
logs in its namespace (charts/mlops-platform/templates/orchestrator.yaml), so even a compromised
orchestrator reaches no node: Pod Security "restricted" on the namespace refuses any other pod.
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

from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

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
UID = 1000
USER = f"{UID}:{UID}"
LABEL = "org.mlops.role"
RUN_LABEL = "org.mlops.run_id"
# The trainer's private /tmp (datasets, the model before upload): a tmpfs, or an emptyDir on Kubernetes.
TMP_SIZE = "1g"


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


def check_command(entrypoint: Any, command: list[str]) -> None:
    """Refuse anything but `mlflow run` of the trainer's retrain entry point with plain parameters."""
    fixed = ["run", PROJECT_DIR, "-e", ENTRY_POINT, "--env-manager", "local", "--run-id"]
    if entrypoint != ["mlflow"] or command[: len(fixed)] != fixed or len(command) < 8:
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


@dataclass
class Outcome:
    exit_code: int
    image_digest: str
    logs: str


class Runner(Protocol):
    def run(self, job: Job) -> Outcome: ...


def trainer_environment(settings: Settings, digest: str) -> dict[str, str]:
    """What every trainer container gets, whatever starts it (its MLflow login comes on top)."""
    return {
        "MLFLOW_TRACKING_URI": settings.trainer.tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TRAINER_IMAGE_DIGEST": digest,
        "HOME": "/tmp",
    }


class DockerRunner:
    """Starts the trainer image through the Docker Engine API, within the policy above."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        if not settings.trainer.image:
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
            {"network_mode": "host"} if s.trainer.network == "host" else {"network": s.trainer.network}
        )
        hosts = dict(item.split("=", 1) for item in s.trainer.extra_hosts.split(",") if "=" in item)
        return {
            "image": s.trainer.image,
            "entrypoint": ["mlflow"],
            "command": job.project_args(PROJECT_DIR),
            "environment": {
                **trainer_environment(s, digest),
                **{
                    key: os.environ[key]
                    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
                    if os.environ.get(key)
                },
            },
            **network,
            **({"extra_hosts": hosts} if hosts else {}),
            "user": USER,
            "mem_limit": s.trainer.memory,
            "memswap_limit": s.trainer.memory,
            "nano_cpus": int(s.trainer.cpus * 1e9),
            "pids_limit": s.trainer.pids,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,size={TMP_SIZE}"},
            "labels": {LABEL: "retraining", RUN_LABEL: job.run_id},
            "detach": True,
        }

    def check(self, request: dict[str, Any]) -> None:
        """Refuse any container request but a trainer run within the policy (module docstring)."""
        s = self.settings
        unknown = sorted(set(request) - ALLOWED_ARGUMENTS)
        if unknown:
            raise PolicyError(f"refused container arguments {unknown}: only the trainer policy's are allowed")
        if request.get("image") != s.trainer.image:
            raise PolicyError(f"refused image {request.get('image')!r}: only {s.trainer.image} may run")
        check_command(request.get("entrypoint"), list(request.get("command") or []))
        if sorted(request.get("environment", {})) != sorted(
            set(request.get("environment", {})) & ENVIRONMENT
        ):
            raise PolicyError(f"refused environment: only {sorted(ENVIRONMENT)}")
        expected_network = (
            request.get("network_mode") == "host"
            if s.trainer.network == "host"
            else request.get("network") == s.trainer.network and "network_mode" not in request
        )
        if not expected_network:
            raise PolicyError(f"refused network: only {s.trainer.network!r}")
        hardening = {
            "user": USER,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "mem_limit": s.trainer.memory,
            "memswap_limit": s.trainer.memory,
            "pids_limit": s.trainer.pids,
        }
        for key, value in hardening.items():
            if request.get(key) != value:
                raise PolicyError(f"refused {key}={request.get(key)!r}: the policy requires {value!r}")
        if not request.get("nano_cpus") or request["nano_cpus"] > int(s.trainer.cpus * 1e9):
            raise PolicyError("refused CPU limit: required, at most TRAINER_CPUS")
        if set(request.get("tmpfs", {})) - {"/tmp"}:
            raise PolicyError("refused tmpfs: only /tmp")

    def start(self, request: dict[str, Any]) -> Any:
        """The only call that reaches the Docker Engine: checked first, always."""
        self.check(request)
        return self.client.containers.run(**request)

    def image_digest(self) -> str:
        """The trainer image's content digest (a repository digest when it came from a registry)."""
        image = self.client.images.get(self.settings.trainer.image)
        digests = image.attrs.get("RepoDigests") or []
        return str(digests[0] if digests else image.id)

    def run(self, job: Job) -> Outcome:
        digest = self.image_digest()
        container = self.start(self.container_request(job, digest))
        timeout = self.settings.trainer.timeout_s
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


def kubernetes_quantity(size: str) -> str:
    """A Docker size ("3g", "512m") as a Kubernetes quantity ("3Gi", "512Mi"); quantities pass as they are."""
    units = {"b": "", "k": "Ki", "m": "Mi", "g": "Gi"}
    number, unit = size[:-1], size[-1:].lower()
    if number.isdigit() and unit in units:
        return number + units[unit]
    return size


class KubernetesRunner:
    """Starts the trainer image as a Kubernetes Job in TRAINER_NAMESPACE, within the policy above."""

    def __init__(self, settings: Settings, batch: Any = None, core: Any = None, poll_s: float = 5.0) -> None:
        if not settings.trainer.image:
            raise ValueError("TRAINER_IMAGE is not set: the kubernetes runner needs the trainer image")
        if not settings.trainer.namespace or not settings.trainer.secret:
            raise ValueError("TRAINER_NAMESPACE and TRAINER_SECRET must be set for the kubernetes runner")
        self.settings, self.poll_s = settings, poll_s
        self._batch, self._core = batch, core

    def _clients(self) -> tuple[Any, Any]:
        if self._batch is None or self._core is None:
            from kubernetes import client, config  # only this runner needs the client

            config.load_incluster_config()  # the orchestrator's ServiceAccount token
            self._batch, self._core = client.BatchV1Api(), client.CoreV1Api()
        return self._batch, self._core

    def job_manifest(self, job: Job) -> Any:
        """The Job for `job` (kubernetes client models): everything but the parameter values is fixed."""
        from kubernetes.client import models as k

        s = self.settings
        limits = {"cpu": f"{round(s.trainer.cpus * 1000)}m", "memory": kubernetes_quantity(s.trainer.memory)}
        env = [
            k.V1EnvVar(name=name, value=value)
            for name, value in trainer_environment(s, s.trainer.image).items()
        ]
        if os.environ.get("MLFLOW_TRACKING_USERNAME"):
            env.append(
                k.V1EnvVar(name="MLFLOW_TRACKING_USERNAME", value=os.environ["MLFLOW_TRACKING_USERNAME"])
            )
        # The password by reference: the Job never holds it (the orchestrator's own, in the Secret).
        password = k.V1SecretKeySelector(name=s.trainer.secret, key="MLFLOW_ORCHESTRATOR_PASSWORD")
        env.append(
            k.V1EnvVar(name="MLFLOW_TRACKING_PASSWORD", value_from=k.V1EnvVarSource(secret_key_ref=password))
        )
        labels = {LABEL: "retraining", RUN_LABEL: job.run_id}
        container = k.V1Container(
            name="trainer",
            image=s.trainer.image,
            command=["mlflow"],
            args=job.project_args(PROJECT_DIR),
            env=env,
            resources=k.V1ResourceRequirements(requests=limits, limits=limits),
            security_context=k.V1SecurityContext(
                allow_privilege_escalation=False,
                read_only_root_filesystem=True,
                capabilities=k.V1Capabilities(drop=["ALL"]),
            ),
            volume_mounts=[k.V1VolumeMount(name="tmp", mount_path="/tmp")],
        )
        pod = k.V1PodSpec(
            restart_policy="Never",
            automount_service_account_token=False,
            enable_service_links=False,
            security_context=k.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=UID,
                run_as_group=UID,
                seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault"),
            ),
            containers=[container],
            volumes=[
                k.V1Volume(
                    name="tmp", empty_dir=k.V1EmptyDirVolumeSource(size_limit=kubernetes_quantity(TMP_SIZE))
                )
            ],
        )
        return k.V1Job(
            api_version="batch/v1",
            kind="Job",
            metadata=k.V1ObjectMeta(
                name=f"retrain-{job.run_id[:16]}", namespace=s.trainer.namespace, labels=labels
            ),
            spec=k.V1JobSpec(
                backoff_limit=0,  # a failed retraining is reported, not repeated
                active_deadline_seconds=int(s.trainer.timeout_s),
                ttl_seconds_after_finished=3600,  # cleaned up even if the delete below never happens
                template=k.V1PodTemplateSpec(metadata=k.V1ObjectMeta(labels=labels), spec=pod),
            ),
        )

    def check(self, manifest: Any) -> None:
        """Refuse any Job but a trainer run within the policy (module docstring)."""
        from kubernetes.client import ApiClient

        s = self.settings
        spec = ApiClient().sanitize_for_serialization(manifest)
        pod = spec["spec"]["template"]["spec"]
        if spec["metadata"].get("namespace") != s.trainer.namespace:
            raise PolicyError(f"refused namespace: only {s.trainer.namespace!r}")
        allowed_pod = {
            "restartPolicy", "automountServiceAccountToken", "enableServiceLinks", "securityContext",
            "containers", "volumes",
        }  # fmt: skip
        if set(pod) - allowed_pod or pod.get("automountServiceAccountToken") is not False:
            raise PolicyError(
                f"refused pod fields {sorted(set(pod) - allowed_pod)} or a service account token"
            )
        pod_security = {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID}
        if pod["securityContext"] != {**pod_security, "seccompProfile": {"type": "RuntimeDefault"}}:
            raise PolicyError("refused pod security context: the policy's non-root user and seccomp only")
        if pod.get("volumes") != [{"name": "tmp", "emptyDir": {"sizeLimit": kubernetes_quantity(TMP_SIZE)}}]:
            raise PolicyError("refused volumes: only an emptyDir /tmp")
        if len(pod["containers"]) != 1:
            raise PolicyError("refused containers: exactly one trainer")
        container = pod["containers"][0]
        if container.get("image") != s.trainer.image:
            raise PolicyError(f"refused image {container.get('image')!r}: only {s.trainer.image} may run")
        check_command(container.get("command"), list(container.get("args") or []))
        names = [item["name"] for item in container.get("env", [])]
        if set(names) - ENVIRONMENT or len(names) != len(set(names)):
            raise PolicyError(f"refused environment: only {sorted(ENVIRONMENT)}")
        for item in container.get("env", []):
            ref = item.get("valueFrom")
            if ref is not None and ref != {
                "secretKeyRef": {"name": s.trainer.secret, "key": "MLFLOW_ORCHESTRATOR_PASSWORD"}
            }:
                raise PolicyError(f"refused environment reference for {item['name']}")
        security = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        if container.get("securityContext") != security:
            raise PolicyError(f"refused container security context: the policy requires {security}")
        limits = {"cpu": f"{round(s.trainer.cpus * 1000)}m", "memory": kubernetes_quantity(s.trainer.memory)}
        if container.get("resources") != {"limits": limits, "requests": limits}:
            raise PolicyError(f"refused resources: requests and limits must be {limits}")
        if container.get("volumeMounts") != [{"name": "tmp", "mountPath": "/tmp"}]:
            raise PolicyError("refused mounts: only /tmp")
        allowed_container = {
            "name",
            "image",
            "command",
            "args",
            "env",
            "resources",
            "securityContext",
            "volumeMounts",
        }
        if set(container) - allowed_container:
            raise PolicyError(f"refused container fields {sorted(set(container) - allowed_container)}")

    def start(self, manifest: Any) -> Any:
        """The only call that creates anything in the cluster: checked first, always."""
        self.check(manifest)
        batch, _ = self._clients()
        return batch.create_namespaced_job(namespace=self.settings.trainer.namespace, body=manifest)

    def _wait_for(self, batch: Any, name: str, namespace: str) -> int:
        """0 once the Job succeeded, 1 once it failed, polled every poll_s; 124 when it did neither
        within TRAINER_TIMEOUT_S (and a minute to schedule its pod)."""

        @retry(
            retry=retry_if_result(lambda code: code is None),
            wait=wait_fixed(self.poll_s),
            stop=stop_after_delay(self.settings.trainer.timeout_s + 60),
            retry_error_callback=lambda _: 124,
        )
        def finished() -> int | None:
            status = batch.read_namespaced_job_status(name, namespace).status
            return 0 if status.succeeded else 1 if status.failed else None

        return finished() or 0  # None never leaves the retry: it ends on a code, or on 124

    def run(self, job: Job) -> Outcome:
        manifest = self.job_manifest(job)
        name, namespace = manifest.metadata.name, self.settings.trainer.namespace
        self.start(manifest)
        batch, core = self._clients()
        try:
            code = self._wait_for(batch, name, namespace)
            timeout_s = self.settings.trainer.timeout_s
            note = f"\norchestrator: the trainer timed out after {timeout_s:.0f} s\n" if code == 124 else ""
            logs, digest = "", self.settings.trainer.image
            pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
            for pod in pods:
                statuses = pod.status.container_statuses or []
                digest = next((st.image_id for st in statuses if st.image_id), digest)
                terminated = next(
                    (st.state.terminated for st in statuses if st.state and st.state.terminated), None
                )
                if terminated is not None and code != 124:
                    code = int(terminated.exit_code)
                with contextlib.suppress(Exception):  # a pod that never started has no log
                    logs += core.read_namespaced_pod_log(pod.metadata.name, namespace)
            return Outcome(code, digest, logs + note)
        finally:
            with contextlib.suppress(Exception):  # already gone (ttlSecondsAfterFinished): nothing to clean
                batch.delete_namespaced_job(name, namespace, propagation_policy="Background")


class ProcessRunner:
    """Local mode: the same `mlflow run`, as a child process of the orchestrator."""

    def __init__(self, settings: Settings, project_dir: Path, env: dict[str, str]) -> None:
        self.settings, self.project_dir, self.env = settings, project_dir, env

    def run(self, job: Job) -> Outcome:
        check_job(job)
        digest = f"process:python-{sys.version_info.major}.{sys.version_info.minor}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", *job.project_args(str(self.project_dir))],
            env={**self.env, "MLFLOW_TRACKING_URI": self.settings.trainer.tracking_uri,
                 "TRAINER_IMAGE_DIGEST": digest},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
        reader.start()
        try:
            proc.wait(self.settings.trainer.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            output.append(f"orchestrator: trainer timed out after {self.settings.trainer.timeout_s:.0f} s\n")
        reader.join(10)
        return Outcome(proc.returncode, digest, "".join(output))
