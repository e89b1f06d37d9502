"""The orchestrator's Kubernetes runner: the Job it builds (the official client's models) is the
Docker runner's policy, passes kubernetes-validate --strict, and anything outside the policy is
refused before the API is called; a run reads the Job's status and logs and deletes it."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient
from kubernetes.client import models as k

from services.orchestrator import Settings
from services.orchestrator.runner import (
    DockerRunner,
    Job,
    KubernetesRunner,
    PolicyError,
    kubernetes_quantity,
)
from tests.conftest import ROOT

RUN_ID = "0123456789abcdef0123456789abcdef"
JOB = Job(RUN_ID, {"target": "latency_ms", "models": "random-forest", "trigger": "alert:x"})
TOOLS = Path(os.environ.get("CHART_TOOLS_DIR", ROOT / ".cache" / "chart-tools"))


def settings(**overrides: Any) -> Settings:
    values = {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
        "MONITORING_DB_URI": "postgresql://u@127.0.0.1:1/monitoring",
        "TRAINER_RUNNER": "kubernetes",
        "TRAINER_IMAGE": "registry.example.com/mlops/trainer:1.0",
        "TRAINER_NAMESPACE": "mlops",
        "TRAINER_SECRET": "mlops-secrets",
        "TRAINER_MEMORY": "3g",
        "TRAINER_CPUS": "1.5",
        **overrides,
    }
    return Settings.from_env(values)


class RefusingApi:
    """Stands where the client's BatchV1Api/CoreV1Api would: any call reaching it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the policy let a request reach the Kubernetes API ({name})")


@pytest.fixture
def runner() -> KubernetesRunner:
    return KubernetesRunner(settings(), batch=RefusingApi(), core=RefusingApi())


def as_dict(manifest: Any) -> dict[str, Any]:
    return ApiClient().sanitize_for_serialization(manifest)


def test_the_job_passes_the_policy_and_is_hardened(runner: KubernetesRunner) -> None:
    manifest = runner.job_manifest(JOB)
    runner.check(manifest)
    job = as_dict(manifest)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["metadata"]["namespace"] == "mlops" and job["spec"]["backoffLimit"] == 0
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["limits"] == {"cpu": "1500m", "memory": "3Gi"}
    password = next(item for item in container["env"] if item["name"] == "MLFLOW_TRACKING_PASSWORD")
    assert "value" not in password  # by reference to the Secret, never in the Job
    assert password["valueFrom"]["secretKeyRef"] == {
        "name": "mlops-secrets",
        "key": "MLFLOW_ORCHESTRATOR_PASSWORD",
    }


def test_the_job_passes_kubernetes_validate_strict(runner: KubernetesRunner, tmp_path: Path) -> None:
    validate = TOOLS / "venv" / "bin" / "kubernetes-validate"
    if not validate.exists():
        pytest.fail(f"{validate} is missing: run `make test-tools` (infra/chart-tools.sh)")
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(as_dict(runner.job_manifest(JOB))))
    result = subprocess.run(
        [str(validate), "--strict", str(manifest)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "passed for resource job/retrain-" in result.stdout, (
        result.stdout + result.stderr
    )


def test_both_runners_apply_one_policy(runner: KubernetesRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Image, command, user, limits and environment names are the Docker runner's."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "orchestrator")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "secret")
    docker = DockerRunner(
        settings(TRAINER_RUNNER="docker", TRAINER_NETWORK="mlops_default"), client=RefusingApi()
    )
    request = docker.container_request(JOB, "sha256:abc")
    container = as_dict(runner.job_manifest(JOB))["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == request["image"]
    assert container["command"] + container["args"] == request["entrypoint"] + request["command"]
    assert {item["name"] for item in container["env"]} == set(request["environment"])
    assert as_dict(runner.job_manifest(JOB))["spec"]["template"]["spec"]["securityContext"][
        "runAsUser"
    ] == int(request["user"].split(":")[0])
    assert container["resources"]["limits"]["memory"] == kubernetes_quantity(request["mem_limit"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is request["read_only"]


def change(manifest: Any, edit: Any) -> Any:
    changed = copy.deepcopy(manifest)
    edit(changed)
    return changed


def _container(manifest: Any) -> Any:
    return manifest.spec.template.spec.containers[0]


REFUSED = [
    (lambda m: setattr(_container(m), "image", "alpine:3"), "refused image"),
    (lambda m: setattr(_container(m), "command", ["sh", "-c"]), "refused command"),
    (lambda m: _container(m).args.extend(["-P", "x=1;rm"]), "unknown trainer parameters|not a plain value"),
    (lambda m: setattr(m.metadata, "namespace", "kube-system"), "refused namespace"),
    (lambda m: setattr(m.spec.template.spec, "host_network", True), "refused pod fields"),
    (lambda m: setattr(m.spec.template.spec, "service_account_name", "orchestrator"), "refused pod fields"),
    (
        lambda m: setattr(m.spec.template.spec, "automount_service_account_token", True),
        "service account token",
    ),
    (
        lambda m: m.spec.template.spec.volumes.append(
            k.V1Volume(name="root", host_path=k.V1HostPathVolumeSource(path="/"))
        ),
        "refused volumes",
    ),
    (
        lambda m: setattr(m.spec.template.spec.security_context, "run_as_user", 0),
        "refused pod security context",
    ),
    (
        lambda m: setattr(_container(m).security_context, "privileged", True),
        "refused container security context",
    ),
    (
        lambda m: setattr(_container(m).security_context, "allow_privilege_escalation", True),
        "refused container security context",
    ),
    (
        lambda m: _container(m).env.append(k.V1EnvVar(name="LD_PRELOAD", value="/tmp/x.so")),
        "refused environment",
    ),
    (
        lambda m: setattr(_container(m).env[-1].value_from.secret_key_ref, "key", "POSTGRES_PASSWORD"),
        "refused environment reference",
    ),
    (lambda m: _container(m).resources.limits.update(memory="64Gi"), "refused resources"),
    (lambda m: setattr(_container(m), "working_dir", "/"), "refused container fields"),
]


@pytest.mark.parametrize(("edit", "message"), REFUSED)
def test_anything_outside_the_policy_is_refused_before_the_api(
    runner: KubernetesRunner, edit: Any, message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        runner.start(change(runner.job_manifest(JOB), edit))


class FakeBatch:
    """BatchV1Api's three calls, answering with the client's models: running once, then succeeded."""

    def __init__(self) -> None:
        self.created: list[Any] = []
        self.deleted: list[tuple[str, str, str]] = []
        self.reads = 0

    def create_namespaced_job(self, namespace: str, body: Any) -> Any:
        self.created.append((namespace, body))
        return body

    def read_namespaced_job_status(self, name: str, namespace: str) -> k.V1Job:
        self.reads += 1
        done = self.reads > 1
        status = k.V1JobStatus(active=0 if done else 1, succeeded=1 if done else None)
        return k.V1Job(metadata=k.V1ObjectMeta(name=name), status=status)

    def delete_namespaced_job(self, name: str, namespace: str, propagation_policy: str) -> None:
        self.deleted.append((name, namespace, propagation_policy))


class FakeCore:
    def list_namespaced_pod(self, namespace: str, label_selector: str) -> k.V1PodList:
        assert label_selector.startswith("job-name=retrain-")
        terminated = k.V1ContainerStateTerminated(exit_code=0)
        status = k.V1ContainerStatus(
            name="trainer", image="trainer", image_id="registry.example.com/mlops/trainer@sha256:abc",
            ready=False, restart_count=0, state=k.V1ContainerState(terminated=terminated),
        )  # fmt: skip
        pod = k.V1Pod(
            metadata=k.V1ObjectMeta(name="retrain-pod"), status=k.V1PodStatus(container_statuses=[status])
        )
        return k.V1PodList(items=[pod])

    def read_namespaced_pod_log(self, name: str, namespace: str) -> str:
        return "trained\n"


def test_a_run_creates_waits_reads_logs_and_deletes() -> None:
    batch = FakeBatch()
    runner = KubernetesRunner(settings(), batch=batch, core=FakeCore(), poll_s=0)
    outcome = runner.run(JOB)
    assert outcome.exit_code == 0 and outcome.logs == "trained\n"
    assert outcome.image_digest == "registry.example.com/mlops/trainer@sha256:abc"
    assert batch.created[0][0] == "mlops" and batch.reads == 2
    assert batch.deleted == [(f"retrain-{RUN_ID[:16]}", "mlops", "Background")]


def test_the_runner_needs_its_namespace_and_secret() -> None:
    with pytest.raises(ValueError, match="TRAINER_NAMESPACE and TRAINER_SECRET"):
        KubernetesRunner(settings(TRAINER_SECRET=""))


@pytest.mark.parametrize(
    ("size", "quantity"), [("3g", "3Gi"), ("512m", "512Mi"), ("3Gi", "3Gi"), ("100", "100")]
)
def test_docker_sizes_become_quantities(size: str, quantity: str) -> None:
    assert kubernetes_quantity(size) == quantity
