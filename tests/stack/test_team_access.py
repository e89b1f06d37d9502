"""The running stack is authenticated: MLflow answers 401 without a login, Prometheus scrapes it with
its account, Grafana refuses anonymous API calls and its viewer login (create-grafana-viewer) reads
dashboards but cannot save one, the workshop path works with a participant's login
(`make participant`), who still cannot move `production`, and the S3 store (a real server: SeaweedFS
behind MinIO's name offline) refuses anonymous and wrong-key requests."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import requests
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from contracts.envfile import read_env_file
from services.mlflow.auth_config import AUTH_CACHE_TTL_S
from tests.stack.stack import ENV, ENV_FILE, GATEWAY, GRAFANA, MLFLOW, MODELS, REQUEST, ROOT, prometheus_query


def test_mlflow_reads_and_writes_without_a_login_get_401() -> None:
    assert (
        requests.get(f"{MLFLOW}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10).status_code
        == 401
    )
    created = requests.post(f"{MLFLOW}/api/2.0/mlflow/experiments/create", json={"name": "anon"}, timeout=10)
    assert created.status_code == 401
    alias = {"name": MODELS[0], "alias": "production", "version": "1"}
    assert (
        requests.post(f"{MLFLOW}/api/2.0/mlflow/registered-models/alias", json=alias, timeout=10).status_code
        == 401
    )
    ui = requests.get(f"{MLFLOW}/", timeout=10)
    assert ui.status_code == 401 and "Basic" in ui.headers.get("WWW-Authenticate", "")
    assert requests.get(f"{MLFLOW}/health", timeout=10).status_code == 200


def test_prometheus_scrapes_mlflow_with_its_account() -> None:
    rows = prometheus_query('up{job="mlflow"}')
    assert rows and rows[0]["value"][1] == "1", rows  # type: ignore[index]


def test_grafana_refuses_anonymous_api_calls() -> None:
    assert requests.get(f"{GRAFANA}/api/search", timeout=10).status_code == 401


def test_the_grafana_viewer_reads_dashboards_and_cannot_save_them() -> None:
    """The participants' Grafana login from .env (GRAFANA_VIEWER_USER/PASSWORD), made by the
    create-grafana-viewer job: Viewer role, so it reads the provisioned dashboards, and saving one,
    or creating users, is refused with 403."""
    viewer = (ENV.get("GRAFANA_VIEWER_USER", "viewer"), ENV["GRAFANA_VIEWER_PASSWORD"])
    me = requests.get(f"{GRAFANA}/api/user", auth=viewer, timeout=10)
    assert me.status_code == 200 and me.json()["login"] == viewer[0], me.text
    hits = requests.get(f"{GRAFANA}/api/search", params={"type": "dash-db"}, auth=viewer, timeout=10)
    assert hits.status_code == 200, hits.text
    titles = {hit["title"]: hit["uid"] for hit in hits.json()}
    assert "Platform overview" in titles, titles
    found = requests.get(
        f"{GRAFANA}/api/dashboards/uid/{titles['Platform overview']}", auth=viewer, timeout=10
    )
    assert found.status_code == 200 and found.json()["meta"]["canSave"] is False, found.text
    dashboard = {**found.json()["dashboard"], "title": "Platform overview (viewer edit)"}
    saved = requests.post(
        f"{GRAFANA}/api/dashboards/db",
        json={"dashboard": dashboard, "overwrite": True},
        auth=viewer,
        timeout=10,
    )
    assert saved.status_code == 403, saved.text
    user = {"login": "e2e-intruder", "password": "intruder-password-123"}
    assert requests.post(f"{GRAFANA}/api/admin/users", json=user, auth=viewer, timeout=10).status_code == 403
    wrong = (viewer[0], viewer[1] + "-wrong")
    assert requests.get(f"{GRAFANA}/api/search", auth=wrong, timeout=10).status_code == 401


def test_the_workshop_path_works_with_a_participants_login(tmp_path: Path) -> None:
    credentials = tmp_path / "participants"
    env = {**os.environ, "ACCESS_CREDENTIALS_DIR": str(credentials)}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    add = [sys.executable, "-m", "services.access", "--env-file", str(ENV_FILE), "add", "e2e-alice"]
    done = subprocess.run(add, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    login_file = credentials / "e2e-alice.env"
    assert login_file.stat().st_mode & 0o777 == 0o600
    login = read_env_file(login_file)
    user = (login["MLFLOW_TRACKING_USERNAME"], login["MLFLOW_TRACKING_PASSWORD"])
    assert login["MLFLOW_TRACKING_PASSWORD"] not in done.stderr
    # docs/workshop.md, participant's guide step 5, as the participant: load the production model and predict.
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model('models:/{MODELS[0]}@production')\n"
        "rows = json.load(sys.stdin)['dataframe_records']\n"
        "print(len(m.predict(pd.DataFrame(rows))))\n"
    )
    as_alice = {**env, "MLFLOW_TRACKING_URI": MLFLOW, "MLFLOW_TRACKING_USERNAME": user[0],
                "MLFLOW_TRACKING_PASSWORD": user[1]}  # fmt: skip
    loaded = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(REQUEST), env=as_alice,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.strip() == str(len(REQUEST["dataframe_records"]))
    # Her own experiment takes runs; `production` does not move for her.
    found = requests.get(
        f"{MLFLOW}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": "e2e-alice"},
        auth=user,
        timeout=10,
    )
    assert found.status_code == 200, found.text
    run = requests.post(
        f"{MLFLOW}/api/2.0/mlflow/runs/create",
        json={"experiment_id": found.json()["experiment"]["experiment_id"]}, auth=user, timeout=10,
    )  # fmt: skip
    assert run.status_code == 200, run.text
    alias = {"name": MODELS[0], "alias": "production", "version": "1"}
    moved = requests.post(
        f"{MLFLOW}/api/2.0/mlflow/registered-models/alias", json=alias, auth=user, timeout=10
    )
    assert moved.status_code == 403
    # Revoked: her login gets 401 within the server's credential cache time.
    remove = [*add[:-2], "remove", "e2e-alice"]
    assert subprocess.run(remove, cwd=ROOT, env=env, capture_output=True, timeout=120).returncode == 0
    search = f"{MLFLOW}/api/2.0/mlflow/experiments/search?max_results=1"
    deadline = time.monotonic() + AUTH_CACHE_TTL_S + 2
    while (status := requests.get(search, auth=user, timeout=30).status_code) != 401:
        assert time.monotonic() < deadline, f"a removed participant still gets {status}"
        time.sleep(0.5)


def test_a_gateway_api_key_is_required_once_created_and_revoked_without_a_restart() -> None:
    """`make gateway-key` writes the key file the gateway container reads (mounted read-only, owned
    by its user): keys apply within seconds, no restart. Runs last: the gateway is open again after."""
    url = f"{GATEWAY}/models/{MODELS[0]}/invocations"

    def status(**headers: str) -> int:
        return requests.post(url, json=REQUEST, headers=headers, timeout=30).status_code

    def within(expected: int, **headers: str) -> None:
        deadline = time.monotonic() + 10
        while (got := status(**headers)) != expected:
            assert time.monotonic() < deadline, f"{got}, not {expected}, 10 s after the key file changed"
            time.sleep(0.5)

    created = subprocess.run(
        [sys.executable, "infra/stack.py", "gateway-key", "e2e-client"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    try:
        within(401)
        assert status(Authorization=f"Bearer {key}") == 200
        assert status(**{"X-API-Key": key}) == 200
        assert status(Authorization="Bearer wrong-key-wrong-key-wrong") == 401
        assert requests.get(f"{GATEWAY}/health", timeout=10).status_code == 200
    finally:
        subprocess.run(
            [sys.executable, "infra/stack.py", "gateway-key", "--remove", "e2e-client"], cwd=ROOT, check=True
        )
    within(200)  # the last key revoked: open again (GATEWAY_REQUIRE_API_KEYS is false here)


# Posts to every control endpoint and prints the statuses: without a token, or with the one in
# /run/secrets/control_token when the container has it (read there: no secret on a command line).
PROBE = """
import json, os, urllib.request, urllib.error
secret = "/run/secrets/control_token"
token = open(secret).read().strip() if os.access(secret, os.R_OK) else "wrong-token"
def post(url, body):
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + token}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        return urllib.request.urlopen(request, timeout=30).status
    except urllib.error.HTTPError as exc:
        return exc.code
alert = {"receiver": "x", "status": "firing", "alerts": "not a list", "version": "4", "groupKey": "x"}
print(json.dumps([
    post("http://orchestrator:8002/rollback", {"model": "no-such-model"}),
    post("http://orchestrator:8002/retrain", {"model": "no-such-model"}),
    post("http://orchestrator:8002/alerts", alert),
    post("http://monitor:8001/alerts", alert),
]))
"""


def probe(service: str) -> list[int]:
    done = subprocess.run(
        ["docker", "compose", "exec", "-T", service, "python", "-c", PROBE],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_control_endpoints_refuse_calls_without_the_control_token() -> None:
    """From a serving container (it runs participants' models): 401 everywhere, before the unknown
    model or the invalid body is looked at. From the orchestrator, with its secret (what make retrain
    and make rollback send): through to the lookup (404) and the body check (422), nothing changed."""
    assert probe("serving-latency") == [401, 401, 401, 401]
    assert probe("orchestrator") == [404, 404, 422, 422]
    for name in ("control_token", "control_token_alertmanager", "mlflow_prometheus_password"):
        mode = stat.S_IMODE((ROOT / ".secrets" / name).stat().st_mode)
        assert mode & 0o007 == 0, f".secrets/{name} is readable by everyone ({mode:o})"


def test_the_s3_store_refuses_anonymous_and_wrong_keys() -> None:
    endpoint = f"http://127.0.0.1:{ENV.get('S3_API_PORT', '9000')}"
    bucket = ENV["S3_BUCKET"]

    def s3(**kwargs: object) -> object:
        return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **kwargs)  # type: ignore[call-overload]

    owner = s3(aws_access_key_id=ENV["S3_ACCESS_KEY"], aws_secret_access_key=ENV["S3_SECRET_KEY"])
    assert owner.list_objects_v2(Bucket=bucket, MaxKeys=1)["KeyCount"] == 1  # type: ignore[attr-defined]
    strangers = [
        s3(config=Config(signature_version=UNSIGNED)),
        s3(aws_access_key_id=ENV["S3_ACCESS_KEY"], aws_secret_access_key="not-the-secret-key"),
    ]
    for stranger in strangers:
        for call in (
            lambda c: c.list_objects_v2(Bucket=bucket),
            lambda c: c.put_object(Bucket=bucket, Key="x", Body=b"x"),
        ):
            with pytest.raises(ClientError) as refused:
                call(stranger)
            assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert requests.get(
        f"http://127.0.0.1:{ENV.get('S3_CONSOLE_PORT', '9001')}/minio/health/ready", timeout=5
    ).ok
