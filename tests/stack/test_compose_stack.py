"""The compose stack, running (started by `make e2e`): every promise of `make up`, checked over HTTP,
plus what only the running processes show: every listening socket on loopback, no secret in any
process's arguments.

Run only by infra/e2e.sh, after `make up`; it reads the stack's settings from $MLOPS_ENV_FILE.
The last test restarts the stack (`make down`, `make up`) and checks that nothing was lost.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient

from tests.stack.stack import (
    ENV,
    GATEWAY,
    GRAFANA,
    MLFLOW,
    MODELS,
    PROMETHEUS,
    REQUEST,
    ROOT,
    SERVING,
    prometheus_query,
)


@pytest.fixture(scope="module")
def client() -> MlflowClient:
    return MlflowClient(MLFLOW)


def session_children(client: MlflowClient) -> list:  # type: ignore[type-arg]
    """The candidate runs of the participant's sessions (not the gate's evaluation runs)."""
    experiment = client.get_experiment_by_name(ENV["PARTICIPANT"])
    assert experiment is not None, f"no experiment {ENV['PARTICIPANT']!r}"
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags and "model" in r.data.params]


def snapshot(client: MlflowClient) -> dict[str, object]:
    """What must survive a restart: runs, versions with aliases, artifact listings."""
    runs = session_children(client)
    return {
        "runs": sorted(r.info.run_id for r in runs),
        "versions": {
            name: sorted((v.version, v.run_id) for v in client.search_model_versions(f"name='{name}'"))
            for name in MODELS
        },
        "aliases": {name: client.get_registered_model(name).aliases for name in MODELS},
        "artifacts": {
            r.info.run_id: sorted(a.path for a in client.list_artifacts(r.info.run_id, "plots")) for r in runs
        },
    }


def test_both_models_have_staging_and_production(client: MlflowClient) -> None:
    for name in MODELS:
        aliases = client.get_registered_model(name).aliases
        assert {"staging", "production"} <= set(aliases), (name, aliases)


def test_runs_carry_metrics_params_and_system_metrics(client: MlflowClient) -> None:
    runs = session_children(client)
    assert len(runs) >= 6  # three candidates for two targets
    for run in runs:
        for key in ("test_mae", "test_rmse", "test_r2", "val_rmse", "resource/cpu_seconds"):
            assert key in run.data.metrics, (run.info.run_name, key)
        assert {"model", "target", "n_rows", "seed"} <= set(run.data.params)
        assert run.data.tags.get("platform_version") == ENV["PLATFORM_VERSION"]
    assert any("system/cpu_utilization_percentage" in r.data.metrics for r in runs)
    assert any("resource/cgroup_memory_megabytes" in r.data.metrics for r in runs)


def test_artifacts_come_back_through_the_server_from_s3(client: MlflowClient, tmp_path: Path) -> None:
    run = session_children(client)[0]
    png = Path(client.download_artifacts(run.info.run_id, "plots/residuals.png", str(tmp_path)))
    assert png.read_bytes()[:4] == b"\x89PNG"
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{ENV['S3_API_PORT']}",
        aws_access_key_id=ENV["S3_ACCESS_KEY"],
        aws_secret_access_key=ENV["S3_SECRET_KEY"],
        region_name="us-east-1",
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=ENV["S3_BUCKET"], MaxKeys=1000).get("Contents", [])]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/plots/residuals.png") for k in keys), keys[:20]
    assert any(k.endswith("MLmodel") for k in keys), "no model stored in the bucket"


@pytest.mark.parametrize("name", MODELS)
def test_served_models_answer_with_numbers(name: str) -> None:
    response = requests.post(SERVING[name], json=REQUEST, timeout=30)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(REQUEST["dataframe_records"])
    assert all(isinstance(p, float) for p in predictions)


def test_malformed_request_gets_4xx() -> None:
    headers = {"Content-Type": "application/json"}
    response = requests.post(SERVING["latency-predictor"], data="{not json", headers=headers, timeout=30)
    assert 400 <= response.status_code < 500


def test_prometheus_scrapes_every_target() -> None:
    deadline = time.monotonic() + 90
    while True:
        targets = requests.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if targets and all(h == "up" for h in health.values()):
            break
        assert time.monotonic() < deadline, health
        time.sleep(3)
    assert {"prometheus", "mlflow", "gateway", "monitor", "orchestrator", "alertmanager", "cadvisor"} <= set(
        health
    )
    for query in (
        "mlflow_http_request_total",
        'mlops_model_test_metric{alias="production",metric="test_rmse"}',
        'container_memory_working_set_bytes{container_label_com_docker_compose_service="gateway"}',
        "gateway_model_info",
    ):
        deadline = time.monotonic() + 60
        while not prometheus_query(query):
            assert time.monotonic() < deadline, f"no series for {query}"
            time.sleep(3)
    managers = requests.get(f"{PROMETHEUS}/api/v1/alertmanagers", timeout=10).json()["data"]
    assert managers["activeAlertmanagers"], "Prometheus knows no Alertmanager"


@pytest.mark.parametrize("name", MODELS)
def test_gateway_predicts_with_the_production_version(client: MlflowClient, name: str) -> None:
    response = requests.post(
        f"{GATEWAY}/models/{name}/predict", json={"records": REQUEST["dataframe_records"]}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == client.get_model_version_by_alias(name, "production").version
    assert len(body["predictions"]) == len(body["request_ids"]) == len(REQUEST["dataframe_records"])
    direct = requests.post(SERVING[name], json=REQUEST, timeout=30).json()["predictions"]
    assert body["predictions"] == pytest.approx(direct)


def test_gateway_rejects_bad_records_with_422_naming_the_field() -> None:
    record = dict(REQUEST["dataframe_records"][0], hop_count="many")
    response = requests.post(
        f"{GATEWAY}/models/latency-predictor/predict", json={"records": [record]}, timeout=30
    )
    assert response.status_code == 422
    assert "hop_count" in response.text and "Traceback" not in response.text


def test_grafana_loaded_its_provisioning() -> None:
    auth = (ENV["GRAFANA_ADMIN_USER"], ENV["GRAFANA_ADMIN_PASSWORD"])
    assert requests.get(f"{GRAFANA}/api/health", timeout=10).json()["database"] == "ok"
    dashboard = requests.get(f"{GRAFANA}/api/dashboards/uid/platform-overview", auth=auth, timeout=10)
    assert dashboard.status_code == 200 and dashboard.json()["dashboard"]["title"] == "Platform overview"
    for uid in ("model-serving", "model-quality-drift"):
        assert (
            requests.get(f"{GRAFANA}/api/dashboards/uid/{uid}", auth=auth, timeout=10).status_code == 200
        ), uid
    for uid in ("prometheus", "mlflow-db"):
        assert requests.get(f"{GRAFANA}/api/datasources/uid/{uid}", auth=auth, timeout=10).status_code == 200
    assert requests.get(f"{GRAFANA}/api/dashboards/uid/platform-overview", timeout=10).status_code == 401


def psql_as(role: str, password_key: str, database: str, query: str) -> subprocess.CompletedProcess[str]:
    """psql in the postgres container, then `\\connect` over TCP as a service's role: the script,
    with the password, goes through stdin, never on a command line."""
    login = f"host=127.0.0.1 user={role} dbname={database} password={ENV[password_key]}"
    return subprocess.run(
        ["docker", "compose", "exec", "-T", "postgres",
         "psql", "-U", ENV["POSTGRES_USER"], "-d", "mlflow", "-qAtX", "-v", "ON_ERROR_STOP=1"],
        input=f"\\connect '{login}'\n{query};\n", cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_each_service_role_does_its_job_and_grafanas_cannot_write() -> None:
    """The roles create-databases made (docs/operations.md, "Database roles") on the running stack:
    Grafana's reads MLflow's runs through its views and nothing else; the gateway's appends to its
    log; the monitor's reads it."""
    grafana = ("grafana", "POSTGRES_GRAFANA_PASSWORD")
    runs = psql_as(*grafana, "mlflow", "SELECT count(*) FROM grafana.runs")
    assert runs.returncode == 0 and int(runs.stdout.split()[-1]) > 0, runs.stderr
    for database, query in (
        ("mlflow", "CREATE TABLE public.intruder (i int)"),
        ("mlflow", "SELECT count(*) FROM public.runs"),
        ("mlflow", "COPY (SELECT 1) TO PROGRAM 'true'"),
        ("mlflow_auth", "SELECT 1"),
        ("monitoring", "SELECT 1"),
    ):
        refused = psql_as(*grafana, database, query)
        assert refused.returncode != 0, (database, query, refused.stdout)
        reasons = ("permission denied", "read-only", "must be superuser")
        assert any(reason in refused.stderr for reason in reasons), refused.stderr
    gateway = ("gateway", "POSTGRES_GATEWAY_PASSWORD")
    assert psql_as(*gateway, "monitoring", "SELECT count(*) FROM predictions").returncode == 0
    refused = psql_as(*gateway, "mlflow", "SELECT 1")
    assert refused.returncode != 0 and "permission denied for database" in refused.stderr, refused.stderr
    refused = psql_as(*gateway, "monitoring", "UPDATE feedback SET actual = 0")  # append only
    assert refused.returncode != 0 and "permission denied" in refused.stderr, refused.stderr
    monitor = ("monitor", "POSTGRES_MONITOR_PASSWORD")
    assert psql_as(*monitor, "monitoring", "SELECT count(*) FROM labelled").returncode == 0
    refused = psql_as(*monitor, "monitoring", "DELETE FROM predictions")
    assert refused.returncode != 0 and "permission denied" in refused.stderr, refused.stderr


def replica_predictions(model: str) -> dict[str, float]:
    """Predictions each gateway replica answered for `model`, by Prometheus instance (its port)."""
    query = f'sum by (instance) (gateway_requests_total{{model="{model}",endpoint="predict",status="200"}})'
    return {str(r["metric"]["instance"]): float(r["value"][1]) for r in prometheus_query(query)}  # type: ignore[index]


def test_gateway_replicas_share_the_traffic_and_every_feedback_is_matched() -> None:
    """Two gateway replicas accept on the listener's socket. 100 requests of 10 rows, each on a new
    connection, reach both; one replica is restarted; then feedback for all 1,000 rows, again on new
    connections, is matched whichever replica takes it: 0 unknown. The monitor's live MAE and RMSE
    over the newest FEEDBACK_WINDOW (1,000) values are exactly those of these rows: it reads every
    replica's predictions from the log."""
    model = "bandwidth-efficiency-predictor"
    ids = subprocess.run(
        ["docker", "compose", "ps", "-q", "gateway"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(ids) == int(ENV.get("GATEWAY_REPLICAS", "2")) == 2, ids
    deadline = time.monotonic() + 60
    while len(before := replica_predictions(model)) < 2:
        assert time.monotonic() < deadline, f"Prometheus does not see two gateway replicas: {before}"
        time.sleep(3)
    rows = REQUEST["dataframe_records"] * 10
    answered: list[tuple[str, float, str]] = []  # (request id, prediction, version)
    for _ in range(100):
        answer = requests.post(f"{GATEWAY}/models/{model}/predict", json={"records": rows[:10]}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        answered += [
            (i, p, body["version"]) for i, p in zip(body["request_ids"], body["predictions"], strict=True)
        ]
    assert len({version for *_, version in answered}) == 1, "the served version changed meanwhile"

    def both_answered() -> bool:
        after = replica_predictions(model)
        return len(after) == 2 and all(after[k] > before.get(k, 0) for k in after)

    deadline = time.monotonic() + 60
    while not both_answered():
        assert time.monotonic() < deadline, (
            f"not both replicas answered: {before} -> {replica_predictions(model)}"
        )
        time.sleep(3)
    # A replica restarted (it drains and writes its log): what it answered is still matched.
    subprocess.run(["docker", "restart", ids[0]], capture_output=True, check=True, timeout=120)
    errors = [(i % 7) - 3.0 for i in range(len(answered))]
    unknown: list[str] = []
    for start in range(0, len(answered), 10):
        items = [
            {"request_id": rid, "actual": prediction + errors[start + k]}
            for k, (rid, prediction, _) in enumerate(answered[start : start + 10])
        ]
        fed = requests.post(f"{GATEWAY}/models/{model}/feedback", json={"feedback": items}, timeout=60)
        assert fed.status_code == 200, fed.text
        assert fed.json()["accepted"] + len(fed.json()["unknown"]) == len(items)
        unknown += fed.json()["unknown"]
    assert unknown == [], f"{len(unknown)} of {len(answered)} feedback values unknown"
    mae = sum(abs(e) for e in errors) / len(errors)
    rmse = (sum(e * e for e in errors) / len(errors)) ** 0.5

    def live(name: str) -> float | None:
        found = prometheus_query(f'{name}{{model="{model}"}}')
        return float(found[0]["value"][1]) if found else None  # type: ignore[index]

    deadline = time.monotonic() + 120
    while not (live("gateway_live_mae") == pytest.approx(mae, rel=1e-6)
               and live("gateway_live_rmse") == pytest.approx(rmse, rel=1e-6)):  # fmt: skip
        assert time.monotonic() < deadline, (
            f"the monitor's live MAE/RMSE {live('gateway_live_mae')}/{live('gateway_live_rmse')}, "
            f"expected {mae}/{rmse} from both replicas' rows"
        )
        time.sleep(3)


def test_a_new_production_version_rolls_out_without_a_failed_request(client: MlflowClient) -> None:
    """Another candidate becomes production: the serving container starts it beside the old one and
    the gateway switches to it; predictions through the gateway never fail, then the same back."""
    name = "latency-predictor"
    before = client.get_model_version_by_alias(name, "production")
    other = next(
        r
        for r in session_children(client)
        if r.data.params["target"] == "latency_ms" and r.info.run_id != before.run_id
    )
    mlflow.set_tracking_uri(MLFLOW)
    moved = mlflow.register_model(f"runs:/{other.info.run_id}/model", name)
    records = {"records": REQUEST["dataframe_records"]}

    def predict_until(version: str) -> None:
        deadline, labels = time.monotonic() + 240, [""]
        while labels[-1] != version:
            assert time.monotonic() < deadline, f"the gateway never answered with v{version}: {labels[-3:]}"
            answer = requests.post(f"{GATEWAY}/models/{name}/predict", json=records, timeout=60)
            assert answer.status_code == 200, answer.text
            labels.append(answer.json()["version"])
            time.sleep(0.2)

    client.set_registered_model_alias(name, "production", moved.version)
    try:
        predict_until(moved.version)
    finally:
        client.set_registered_model_alias(name, "production", before.version)
    predict_until(before.version)


# --- what the running processes show ---------------------------------------------------------------
# Secrets of .env that no process may carry in its arguments (`ps` shows them to every user).
def generated_secrets() -> tuple[str, ...]:
    """Every secret `make env` generates (infra/stack.py's list, not a copy of it)."""
    spec = importlib.util.spec_from_file_location("infra_stack", ROOT / "infra" / "stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return tuple(module.SECRET_KEYS)


SECRET_KEYS = generated_secrets()


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


@dataclass
class Container:
    service: str
    long_running: bool  # has a restart policy (one-shot jobs have none)
    network: str  # "host" under the loopback override
    bindings: dict[str, list[dict[str, str]]]  # published ports (bridge networking)
    pids: list[int]  # every process, as host PIDs


def containers() -> list[Container]:
    """The running containers of this compose project."""
    ids = subprocess.run(
        ["docker", "compose", "ps", "-q"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    assert ids, "no running containers in this compose project"
    found = []
    for inspected in json.loads(docker("inspect", *ids)):
        top = docker("top", inspected["Id"], "-eo", "pid").splitlines()[1:]
        found.append(
            Container(
                service=inspected["Config"]["Labels"]["com.docker.compose.service"],
                long_running=inspected["HostConfig"]["RestartPolicy"]["Name"] not in ("", "no"),
                network=inspected["HostConfig"]["NetworkMode"],
                bindings=inspected["HostConfig"].get("PortBindings") or {},
                pids=[int(line.split()[0]) for line in top],
            )
        )
    return found


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, read from /proc."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(address_hex)
            # /proc prints the address as 32-bit words in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, raw), int(port_hex, 16)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_every_listening_socket_of_the_stack_is_on_loopback() -> None:
    """With host networking (the loopback override) every server's socket is the host's, so each
    must be bound to 127.0.0.1 or ::1; in bridge mode every published port must bind to 127.0.0.1."""
    if os.geteuid() != 0:
        pytest.fail("reading other processes' sockets in /proc needs root (make e2e runs as root)")
    wide, listening = [], set()
    running = containers()
    for container in running:
        if container.network != "host":
            for published, bindings in container.bindings.items():
                for binding in bindings or []:
                    listening.add(container.service)
                    host = binding.get("HostIp") or "0.0.0.0"
                    if not is_loopback(host):
                        wide.append(f"{container.service}: publishes {published} on {host}")
            continue
        for pid in container.pids:
            try:
                sockets = listening_sockets(pid)
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:80]
            except FileNotFoundError:  # the process ended meanwhile
                continue
            for address, port in sockets:
                listening.add(container.service)
                if not is_loopback(address):
                    program = command.decode(errors="replace")
                    wide.append(f"{container.service}: pid {pid} ({program}) on {address}:{port}")
    assert not wide, "listening beyond loopback:\n" + "\n".join(sorted(set(wide)))
    # Every long-running service serves something: finding none would mean the check saw nothing.
    expected = {c.service for c in running if c.long_running and c.network == "host"}
    assert expected <= listening, f"no listening socket found for {sorted(expected - listening)}"


def test_no_secret_appears_in_any_process_arguments() -> None:
    """No process on this machine, the stack's containers included (their processes are the host's
    too), carries a secret of .env in its command line."""
    secrets = {key: ENV[key] for key in SECRET_KEYS}
    assert all(len(value) >= 12 for value in secrets.values()), "e2e secrets look unset"
    service_of = {pid: c.service for c in containers() for pid in c.pids}
    assert service_of, "no container processes found"
    leaks, seen = [], 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue
        seen += int(proc.name) in service_of
        for key, value in secrets.items():
            if value in argv:
                where = service_of.get(int(proc.name), "host")
                leaks.append(f"{key} in pid {proc.name} ({where}): {argv.split(chr(0))[0]} ...")
    assert seen, "read no container process"
    assert not leaks, "secrets on command lines:\n" + "\n".join(leaks)


def test_make_down_then_up_keeps_runs_models_and_artifacts(client: MlflowClient, tmp_path: Path) -> None:
    before = snapshot(client)
    subprocess.run(["make", "--no-print-directory", "down"], cwd=ROOT, check=True)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{MLFLOW}/health", timeout=5)
    subprocess.run(["make", "--no-print-directory", "up"], cwd=ROOT, check=True)
    fresh = MlflowClient(MLFLOW)
    assert snapshot(fresh) == before
    run_id = str(before["runs"][0])  # type: ignore[index]
    png = Path(fresh.download_artifacts(run_id, "plots/predicted_vs_actual.png", str(tmp_path)))
    assert png.read_bytes()[:4] == b"\x89PNG"
    response = requests.post(SERVING["latency-predictor"], json=REQUEST, timeout=30)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 120  # the gateway waits for serving, then loads the registry
    while requests.get(f"{GATEWAY}/health", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the gateway did not become healthy after the restart"
        time.sleep(2)
