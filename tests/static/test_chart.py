"""The Helm chart (charts/mlops-platform): every render (default values and each ci/*-values.yaml)
passes `helm lint --strict`, kubernetes-validate --strict, the vendored CRD schemas and checkov with
0 failed checks, and holds the platform's guarantees (hardening, autoscaling, one source for models,
rules and dashboards). The tools come from `make test-tools` (infra/chart-tools.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.models import MODELS

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mlops-platform"
TOOLS = Path(os.environ.get("CHART_TOOLS_DIR", REPO / ".cache" / "chart-tools"))
HELM = TOOLS / "bin" / "helm"
TOOL_PYTHON = TOOLS / "venv" / "bin" / "python"
SCHEMAS = Path(__file__).parent / "crd_schemas"
NAMESPACE = "mlops"
# None: the chart's defaults (values.yaml).
VALUES: list[Path | None] = [None, *sorted((CHART / "ci").glob("*-values.yaml"))]
VALUE_IDS = ["default", *(path.stem for path in VALUES[1:] if path)]
WORKLOADS = ("Deployment", "StatefulSet", "Job")

sys.path.insert(0, str(REPO / "infra"))
import chart as chart_sync  # noqa: E402  (infra/chart.py: the chart's copies of repository files)


def tool(name: str) -> Path:
    """A chart tool, or a failure naming the command that installs it (never a skip)."""
    path = HELM if name == "helm" else TOOLS / "venv" / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make test-tools` (infra/chart-tools.sh)")
    return path


def helm(*args: str, values: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [str(tool("helm")), *args, str(CHART), *(["-f", str(values)] if values else [])]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=VALUES, ids=VALUE_IDS)
def render(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`helm template` of one values file: the manifest file, its objects, and the values file."""
    result = helm("template", "mlops", "--namespace", NAMESPACE, values=request.param)
    assert result.returncode == 0, result.stderr
    folder = tmp_path_factory.mktemp("render")
    manifest = folder / "manifest.yaml"
    manifest.write_text(result.stdout)
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return {"file": manifest, "docs": docs, "values": request.param}


def objects(render: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in render["docs"] if doc["kind"] == kind}


def pod_specs(render: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in render["docs"]:
        if doc["kind"] in WORKLOADS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


@pytest.mark.parametrize("values", VALUES, ids=VALUE_IDS)
def test_helm_lint_strict(values: Path | None) -> None:
    result = helm("lint", "--strict", values=values)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_strict(render: dict[str, Any]) -> None:
    """Every built-in object against Kubernetes' schemas, of the oldest version the chart supports
    (Chart.yaml's kubeVersion) and the newest kubernetes-validate knows; unknown fields fail (--strict)."""
    for version in ("1.30.0", "1.37.0"):
        result = subprocess.run(
            [str(tool("kubernetes-validate")), "--strict", "--quiet", "-k", version, str(render["file"])],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, f"Kubernetes {version}: " + result.stdout + result.stderr
        # Its only warnings: the custom resources, which the next test checks.
        for line in (result.stdout + result.stderr).splitlines():
            assert "Couldn't find schema for kind PrometheusRule" in line or "kind ServiceMonitor" in line, (
                line
            )


def test_custom_resources_match_vendored_crd_schemas(render: dict[str, Any]) -> None:
    result = subprocess.run(
        [str(TOOL_PYTHON), str(Path(__file__).parent / "crd_validate.py"), str(SCHEMAS), str(render["file"])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    monitoring = (
        yaml.safe_load(render["values"].read_text()).get("monitoring", {}) if render["values"] else {}
    )
    if monitoring.get("serviceMonitors", True):
        assert "ServiceMonitor/gateway: valid" in result.stdout


def test_crd_validation_can_fail(tmp_path: Path) -> None:
    """The CRD check rejects an unknown field (the schemas are strict, the script reports it)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"},
             "spec": {"selector": {}, "endpoints": [{"port": "http", "intervall": "5s"}]}}
        )
    )  # fmt: skip
    result = subprocess.run(
        [str(TOOL_PYTHON), str(Path(__file__).parent / "crd_validate.py"), str(SCHEMAS), str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and "'intervall' was unexpected" in result.stdout, result.stdout


def test_checkov_finds_nothing(render: dict[str, Any], tmp_path: Path) -> None:
    """checkov's Kubernetes checks: 0 failed; every skip is an annotation with its reason."""
    folder = tmp_path / "checkov"
    folder.mkdir()
    (folder / "manifest.yaml").write_text(render["file"].read_text())
    result = subprocess.run(
        [str(tool("checkov")), "-d", str(folder), "--framework", "kubernetes", "--skip-download",
         "--compact", "-o", "json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )  # fmt: skip
    report = json.loads(result.stdout)
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    assert result.returncode == 0, result.stderr[-2000:]
    assert report["summary"]["passed"] > 500
    for check in report["results"]["skipped_checks"]:
        assert len(check["check_result"].get("suppress_comment", "")) > 20, check


def test_chart_copies_equal_their_sources() -> None:
    """Models, dashboards and alert rules have one source; the chart holds exact copies."""
    stale = [str(path.relative_to(REPO)) for path in chart_sync.stale_files()]
    assert not stale, f"{stale} differ from their sources: run `make chart-sync`"


def test_one_serving_deployment_per_registered_model(render: dict[str, Any]) -> None:
    deployments = objects(render, "Deployment")
    serving = {name for name in deployments if name.startswith("serving-")}
    assert serving == {model.service for model in MODELS}
    for model in MODELS:
        container = deployments[model.service]["spec"]["template"]["spec"]["containers"][0]
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["SERVING_MODEL_NAME"] == model.name
        assert [port["containerPort"] for port in container["ports"]] == [model.port]


def test_pod_security_restricted_and_limits(render: dict[str, Any]) -> None:
    """Pod Security "restricted" everywhere, and memory and CPU requests and limits."""
    for name, spec in pod_specs(render):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not any(spec.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")), name
        for volume in spec.get("volumes", []):  # the volume types "restricted" admits that we use
            assert set(volume) - {"name"} <= {"emptyDir", "secret", "configMap", "persistentVolumeClaim"}, (
                name
            )
        for container in spec["containers"] + spec.get("initContainers", []):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name} {kind}"


def test_gateway_and_serving_scale_and_roll_without_failing_requests(render: dict[str, Any]) -> None:
    deployments, hpas, pdbs = (
        objects(render, "Deployment"),
        objects(render, "HorizontalPodAutoscaler"),
        objects(render, "PodDisruptionBudget"),
    )
    for name in ["gateway", *(model.service for model in MODELS)]:
        deployment = deployments[name]
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        assert hpas[name]["spec"]["scaleTargetRef"]["name"] == name
        assert hpas[name]["spec"]["minReplicas"] >= 1
        assert pdbs[name]["spec"]["minAvailable"] == 1
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        path = "/health" if name == "gateway" else "/ping"  # the services' real health endpoints
        assert container["readinessProbe"]["httpGet"]["path"] == path, name
    assert deployments["mlflow"]["spec"]["replicas"] >= 2
    gateway_env = {
        item["name"]: item.get("value")
        for item in deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert gateway_env["GATEWAY_LISTENER"] == "", "on Kubernetes the gateway listens itself"


def test_prometheus_rule_is_the_rule_files(render: dict[str, Any]) -> None:
    """The PrometheusRule holds exactly the groups of prometheus/rules/*.yml (what promtool tests)."""
    rules = objects(render, "PrometheusRule")
    if not rules:
        assert render["values"] and "prometheusRule: false" in render["values"].read_text()
        return
    expected = [
        group
        for path in sorted((REPO / "prometheus" / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert rules["mlops-platform"]["spec"]["groups"] == expected


def test_dashboards_are_the_json_files(render: dict[str, Any]) -> None:
    maps = {name: doc for name, doc in objects(render, "ConfigMap").items() if name.startswith("dashboard-")}
    if not maps:
        assert render["values"] and "dashboards: false" in render["values"].read_text()
        return
    files = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
    assert set(maps) == {f"dashboard-{path.stem}" for path in files}
    for path in files:
        config_map = maps[f"dashboard-{path.stem}"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config_map["data"][path.name]) == json.loads(path.read_text())


def test_only_gateway_mlflow_and_reports_open_beyond_the_namespace(render: dict[str, Any]) -> None:
    open_to_all, workloads = set(), set()
    for policy in objects(render, "NetworkPolicy").values():
        selected = policy["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
        for rule in policy["spec"].get("ingress", []):
            if "from" not in rule:  # no source named: any source
                open_to_all.add(selected)
            else:
                for source in rule["from"]:  # other sources: this namespace or the monitoring one
                    assert set(source) <= {"podSelector", "namespaceSelector"}, policy["metadata"]["name"]
                    if "namespaceSelector" in source:
                        assert source["namespaceSelector"]["matchLabels"] == {
                            "kubernetes.io/metadata.name": "monitoring"
                        }
    for doc in render["docs"]:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            workloads.add(doc["metadata"]["name"])
    assert open_to_all == {"gateway", "mlflow", "reports"}
    assert workloads  # the same-namespace policy selects every pod of the platform:
    same_namespace = objects(render, "NetworkPolicy")["mlops-same-namespace"]["spec"]
    assert same_namespace["podSelector"] == {"matchLabels": {"app.kubernetes.io/part-of": "mlops-platform"}}


def test_secrets_generated_or_existing(render: dict[str, Any]) -> None:
    values = yaml.safe_load(render["values"].read_text()) if render["values"] else {}
    existing = values.get("secrets", {}).get("existingSecret", "")
    secrets = objects(render, "Secret")
    assert ("mlops-secrets" in secrets) == (not existing)
    name = existing or "mlops-secrets"
    for pod, spec in pod_specs(render):
        for container in spec["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                assert ref is None or ref["name"] == name, f"{pod} {item['name']}"
            for item in container.get("env", []):  # a URI with a login takes its password from the Secret
                value = str(item.get("value", ""))
                assert "@" not in value or "://" not in value or ":$(" in value, f"{pod} {item['name']}"
    if not existing:
        hook = secrets["mlops-secrets"]["metadata"]["annotations"]
        assert hook["helm.sh/resource-policy"] == "keep"
        assert all(
            len(value) >= 40 for value in secrets["mlops-secrets"]["data"].values()
        )  # 32 random bytes, base64


def test_orchestrator_role_allows_exactly_jobs() -> None:
    result = helm("template", "mlops", "--namespace", NAMESPACE, "-s", "templates/orchestrator.yaml")
    assert result.returncode == 0, result.stderr
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}
    rules = docs["Role"]["rules"]
    assert rules[0] == {
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["create", "get", "list", "watch", "delete"],
    }
    assert all(set(rule["verbs"]) <= {"get", "list"} for rule in rules[1:])
    assert "ClusterRole" not in docs and docs["RoleBinding"]["subjects"][0]["name"] == "orchestrator"


def test_schema_jobs_run_before_the_rollout_with_external_stores(render: dict[str, Any]) -> None:
    """External database and S3: databases, bucket and migration are pre-install/pre-upgrade hooks;
    in-chart stores: Jobs named by revision (a Job's template cannot change on upgrade)."""
    values = yaml.safe_load(render["values"].read_text()) if render["values"] else {}
    external = values.get("postgresql", {}).get("enabled") is False
    jobs = {
        doc["metadata"]["labels"]["app.kubernetes.io/name"]: doc for doc in objects(render, "Job").values()
    }
    for name in ("create-databases", "create-bucket", "mlflow-migrate"):
        annotations = jobs[name]["metadata"]["annotations"]
        assert (annotations.get("helm.sh/hook") == "pre-install,pre-upgrade") == external, name
        assert jobs[name]["metadata"]["name"] == (name if external else f"{name}-r1")
    assert "helm.sh/hook" not in jobs["create-accounts"]["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("postgres.enabled=false", "additional properties 'postgres' not allowed"),  # a typo: postgresql
        ("mlflow.replicas=1", "minimum: got 1, want 2"),
        ("externalDatabase.sslmode=on", "sslmode"),
    ],
)
def test_values_schema_refuses_mistakes(setting: str, message: str) -> None:
    result = helm("template", "mlops", "--set", setting)
    assert result.returncode != 0 and message in result.stderr, result.stderr
