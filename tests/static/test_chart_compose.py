"""The chart and docker-compose.yml describe one deployment: for every compose service with a
counterpart in the rendered chart (a Deployment, StatefulSet or Job of the same component name), the image
repository, the command, the environment variable names and the container ports agree.

Everything is derived from the two files; the only hand-written lists are the intended differences
below, each with its reason. A failure names the service and what to align, in which file.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.static.test_chart import CHART, WORKLOADS, tool

# Compose services the chart has no workload for, and why.
NO_COUNTERPART = {
    "minio": "external S3 or the chart's SeaweedFS StatefulSet (compose's image is a .env choice)",
    "chown-s3-data": "volume ownership comes from the pods' fsGroup",
    "gateway-listener": "rolling updates with readiness replace the socket hand-over (docs/kubernetes.md)",
    "docker-socket-proxy": "the orchestrator starts Kubernetes Jobs through its Role, not Docker",
    "cadvisor": "kube-prometheus-stack scrapes the kubelet's cAdvisor",
    "prometheus": "kube-prometheus-stack's, fed by the ServiceMonitors and the PrometheusRule",
    "alertmanager": "kube-prometheus-stack's",
    "grafana": "kube-prometheus-stack's, fed by the dashboard ConfigMaps",
    "create-grafana-viewer": "Grafana's logins are kube-prometheus-stack's business",
    "backup": "a managed database and bucket have their own backups (docs/kubernetes.md)",
}
# Environment names only one side has, per service (the rest must agree).
CHART_ONLY_ENV = {
    # Every pod: its own IP, an allowed Host (probes and Prometheus call pods by IP).
    "*": {"POD_IP"},
    # The gateway listens itself (compose: the listener holds port 8000, the default).
    "gateway": {"GATEWAY_PORT"},
    # The Job runner: which runner, the namespace its Jobs go to, the Secret their MLflow password is in.
    "orchestrator": {"TRAINER_RUNNER", "TRAINER_NAMESPACE", "TRAINER_SECRET"},
    # The data folder below the volume's root (which may hold lost+found).
    "postgres": {"PGDATA"},
}
COMPOSE_ONLY_ENV = {
    # The Docker runner's: the socket proxy, the compose network, a pids limit (no pod field).
    "orchestrator": {"DOCKER_HOST", "TRAINER_NETWORK", "TRAINER_PIDS"},
}
# Container ports compose does not name (it publishes or probes the others).
CHART_ONLY_PORTS = {"postgres": {5432}}  # the image's default port, internal in compose

EXPANDED = re.compile(r"\$\(([A-Z_][A-Z0-9_]*)\)")


@pytest.fixture(scope="module")
def workloads() -> dict[str, dict[str, Any]]:
    """The chart's workloads by component (default values: the in-chart database and S3, every job);
    the component label is the object's name, bar the revision suffix of one-shot Jobs."""
    result = subprocess.run(
        [str(tool("helm")), "template", "mlops", str(CHART), "--namespace", "mlops"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] in WORKLOADS]
    return {doc["metadata"]["labels"]["app.kubernetes.io/name"]: doc for doc in docs}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def compose_ports(name: str, services: dict[str, Any]) -> set[int]:
    """The ports a compose service's container listens on: published targets and the health check's."""
    if name == "gateway":  # its public socket is the listener's (LISTENER_SOCKETS=public=0.0.0.0:8000),
        sockets = services["gateway-listener"]["environment"]["LISTENER_SOCKETS"]  # its metrics port its own
        public = {int(item.rsplit(":", 1)[1]) for item in sockets.split(",")}
        return public | {int(services["gateway"]["environment"]["GATEWAY_METRICS_PORT"])}
    service = services[name]
    ports = {int(port["target"]) for port in service.get("ports", [])}
    probe = " ".join(service.get("healthcheck", {}).get("test", []))
    ports |= {int(port) for port in re.findall(r"http://localhost:(\d+)/", probe)}
    return ports


def test_every_compose_service_has_a_counterpart_or_a_reason(
    compose_config: dict, workloads: dict[str, dict[str, Any]]
) -> None:
    missing = sorted(set(compose_config["services"]) - set(workloads) - set(NO_COUNTERPART))
    assert not missing, f"compose services with no chart workload and no reason in NO_COUNTERPART: {missing}"
    stale = sorted(set(NO_COUNTERPART) - set(compose_config["services"]))
    assert not stale, f"NO_COUNTERPART names services compose no longer has: {stale}"


def counterparts(compose_config: dict, workloads: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(set(compose_config["services"]) & set(workloads))


def test_images_agree(compose_config: dict, workloads: dict[str, dict[str, Any]]) -> None:
    for name in counterparts(compose_config, workloads):
        compose_image = compose_config["services"][name]["image"]
        chart_image = container(workloads[name])["image"]
        if compose_image.startswith("mlops/"):  # ours: the repository; the tag is the platform version
            assert chart_image.split(":")[0] == compose_image.split(":")[0], name
        else:
            assert chart_image == compose_image, f"{name}: {chart_image} (chart) != {compose_image} (compose)"


def test_commands_agree(compose_config: dict, workloads: dict[str, dict[str, Any]]) -> None:
    """compose's entrypoint + command is the container's command + args (our images: CMD only)."""
    for name in counterparts(compose_config, workloads):
        service, spec = compose_config["services"][name], container(workloads[name])
        compose_argv = (service.get("entrypoint") or []) + (service.get("command") or [])
        chart_argv = (spec.get("command") or []) + (spec.get("args") or [])
        assert chart_argv == compose_argv, f"{name}: chart runs {chart_argv}, compose {compose_argv}"


def test_environment_names_agree(compose_config: dict, workloads: dict[str, dict[str, Any]]) -> None:
    problems = []
    for name in counterparts(compose_config, workloads):
        env = container(workloads[name]).get("env", [])
        chart_names = {item["name"] for item in env}
        compose_names = set(compose_config["services"][name].get("environment", {}))
        # Secrets a value takes by $(NAME) expansion (a password inside a database URI) are the chart's way.
        expanded = {ref for item in env for ref in EXPANDED.findall(str(item.get("value", "")))}
        chart_only = (
            chart_names - compose_names - expanded - CHART_ONLY_ENV["*"] - CHART_ONLY_ENV.get(name, set())
        )
        compose_only = compose_names - chart_names - COMPOSE_ONLY_ENV.get(name, set())
        if compose_only:
            problems.append(f"{name}: compose sets {sorted(compose_only)}, the chart does not")
        if chart_only:
            problems.append(f"{name}: the chart sets {sorted(chart_only)}, compose does not")
    assert not problems, (
        "docker-compose.yml and charts/mlops-platform disagree (align the template, or add an intended "
        "difference with its reason in tests/static/test_chart_compose.py):\n" + "\n".join(problems)
    )


def test_ports_agree(compose_config: dict, workloads: dict[str, dict[str, Any]]) -> None:
    services = compose_config["services"]
    for name in counterparts(compose_config, workloads):
        chart_ports = {port["containerPort"] for port in container(workloads[name]).get("ports", [])}
        chart_ports -= CHART_ONLY_PORTS.get(name, set())
        assert chart_ports == compose_ports(name, services), f"{name}: chart {chart_ports}, compose"
