"""The tracking server on `s3proxied://`: artifacts land in S3, clients get them through the server.

A client that can reach the tracking server but not the S3 endpoint (a laptop outside the compose
network) must still download artifacts: the server must not advertise presigned direct downloads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from mlflow.tracking import MlflowClient

from services import s3init
from services.local import Processes, mlflow_server_cmd, wait_http
from services.s3init.bucket import run as create_bucket
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("proxied-s3")
    env = {
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }  # fmt: skip
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    create_bucket(s3init.Settings.from_env(dict(S3_ENDPOINT_URL=s3_endpoint, S3_BUCKET="artifacts")))
    for key in env:  # the client below must not know the S3 endpoint or credentials
        os.environ.pop(key, None)
    port = free_port()
    cmd = mlflow_server_cmd(f"sqlite:///{base / 'mlflow.db'}", base, port, base)
    cmd[cmd.index("--artifacts-destination") + 1] = "s3proxied://artifacts/mlflow"
    procs = Processes(log_dir=base / "logs")
    proc = procs.start("mlflow", cmd, env)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 120, "the MLflow server")
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop_all()


def test_server_advertises_no_presigned_transfers(server: str) -> None:
    info = requests.get(f"{server}/api/3.0/mlflow/server-info", timeout=10).json()
    assert info.get("multipart_downloads_enabled") is not True
    assert info.get("multipart_uploads_enabled") is not True


def test_artifacts_go_to_s3_and_come_back_through_the_server(
    server: str, s3_endpoint: str, tmp_path: Path
) -> None:
    source = tmp_path / "report.txt"
    source.write_text("proxied")
    # The client API, not the fluent one: an earlier test's active experiment (a process global)
    # belongs to another server.
    client = MlflowClient(server)
    run = client.create_run(client.create_experiment("proxied-s3"))
    client.log_artifact(run.info.run_id, str(source), "reports")
    client.set_terminated(run.info.run_id)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "reports")] == ["reports/report.txt"]
    back = Path(client.download_artifacts(run.info.run_id, "reports/report.txt", str(tmp_path / "out")))
    assert back.read_text() == "proxied"

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="artifacts")["Contents"]]
    assert any(
        k.startswith("mlflow/") and k.endswith(f"{run.info.run_id}/artifacts/reports/report.txt")
        for k in keys
    )
