"""The S3 server of the tests and of the offline MinIO image (infra/offline/minio/standin.py
around SeaweedFS's `weed`): MinIO's contract, enforced credentials, objects kept across restarts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3
import botocore
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import (
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    S3_STANDIN,
    python_env,
    start_s3_server,
    stop_s3_server,
)

pytestmark = pytest.mark.integration


def client(endpoint: str, key: str | None, secret: str | None):  # type: ignore[no-untyped-def]
    """An S3 client; key None: anonymous (unsigned) requests."""
    config = Config(retries={"max_attempts": 1})
    if key is None:
        config = config.merge(Config(signature_version=botocore.UNSIGNED))
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=key, aws_secret_access_key=secret, config=config,
    )  # fmt: skip


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> str:
    s3 = client(s3_endpoint, S3_ACCESS_KEY, S3_SECRET_KEY)
    s3.create_bucket(Bucket="auth-checks")
    s3.put_object(Bucket="auth-checks", Key="kept.txt", Body=b"secret bytes")
    return "auth-checks"


@pytest.mark.parametrize(
    ("who", "key", "secret"),
    [
        ("anonymous", None, None),
        ("wrong secret", S3_ACCESS_KEY, "not-the-secret-1234"),
        ("unknown key", "someone-else", S3_SECRET_KEY),
    ],
)
@pytest.mark.parametrize(
    "operation", ["ListBuckets", "CreateBucket", "PutObject", "GetObject", "ListObjectsV2"]
)
def test_requests_without_the_root_key_get_403(
    s3_endpoint: str, bucket: str, who: str, key: str | None, secret: str | None, operation: str
) -> None:
    s3 = client(s3_endpoint, key, secret)
    calls = {
        "ListBuckets": lambda: s3.list_buckets(),
        "CreateBucket": lambda: s3.create_bucket(Bucket="not-allowed"),
        "PutObject": lambda: s3.put_object(Bucket=bucket, Key="planted.txt", Body=b"x"),
        "GetObject": lambda: s3.get_object(Bucket=bucket, Key="kept.txt"),
        "ListObjectsV2": lambda: s3.list_objects_v2(Bucket=bucket),
    }
    with pytest.raises(ClientError) as denied:
        calls[operation]()
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, who
    names = [b["Name"] for b in client(s3_endpoint, S3_ACCESS_KEY, S3_SECRET_KEY).list_buckets()["Buckets"]]
    assert "not-allowed" not in names


def test_plain_http_without_signature_gets_403(s3_endpoint: str, bucket: str) -> None:
    assert requests.get(f"{s3_endpoint}/", timeout=10).status_code == 403
    assert requests.get(f"{s3_endpoint}/{bucket}/kept.txt", timeout=10).status_code == 403
    assert requests.put(f"{s3_endpoint}/{bucket}/planted.txt", data=b"x", timeout=10).status_code == 403


def test_the_root_key_can_do_what_mlflow_needs(s3_endpoint: str, bucket: str) -> None:
    s3 = client(s3_endpoint, S3_ACCESS_KEY, S3_SECRET_KEY)
    s3.put_object(Bucket=bucket, Key="dir/a.txt", Body=b"a")
    assert s3.get_object(Bucket=bucket, Key="dir/a.txt")["Body"].read() == b"a"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dir/", Delimiter="/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/a.txt"]
    s3.delete_object(Bucket=bucket, Key="dir/a.txt")
    assert s3.list_objects_v2(Bucket=bucket, Prefix="dir/")["KeyCount"] == 0


def test_objects_survive_a_restart(tmp_path: Path) -> None:
    server = start_s3_server(tmp_path)
    try:
        s3 = client(server.url, S3_ACCESS_KEY, S3_SECRET_KEY)
        s3.create_bucket(Bucket="survives")
        s3.put_object(Bucket="survives", Key="model/weights.bin", Body=b"\x00\x01" * 50_000)
        s3.put_object(Bucket="survives", Key="after-a-kill.txt", Body=b"still here")
    finally:
        stop_s3_server(server, graceful=False)  # a crash: every answered PUT must be on disk
    server = start_s3_server(tmp_path)
    try:
        s3 = client(server.url, S3_ACCESS_KEY, S3_SECRET_KEY)
        body = s3.get_object(Bucket="survives", Key="model/weights.bin")["Body"].read()
        assert body == b"\x00\x01" * 50_000
        assert s3.get_object(Bucket="survives", Key="after-a-kill.txt")["Body"].read() == b"still here"
        assert requests.get(f"{server.console}/minio/health/live", timeout=5).status_code == 200
        assert requests.get(f"{server.console}/minio/health/ready", timeout=5).status_code == 200
        server.proc.terminate()  # docker stop: the wrapper stops weed and exits 0 within its grace
        assert server.proc.wait(timeout=15) == 0
    finally:
        stop_s3_server(server)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "MINIO_ROOT_USER and MINIO_ROOT_PASSWORD must be set"),
        ({"MINIO_ROOT_USER": "root", "MINIO_ROOT_PASSWORD": "short"}, "MINIO_ROOT_PASSWORD at least 8"),
        (
            {"MINIO_ROOT_USER": "root", "MINIO_ROOT_PASSWORD": "long-enough", "STANDIN_WEED_PORTS": "nope=1"},
            "STANDIN_WEED_PORTS: bad entry 'nope=1'",
        ),
    ],
)
def test_bad_settings_stop_it_with_one_line(tmp_path: Path, env: dict[str, str], message: str) -> None:
    base = {k: v for k, v in python_env().items() if not k.startswith("MINIO_")}
    done = subprocess.run(
        [sys.executable, str(S3_STANDIN), "server", str(tmp_path), "--address", "127.0.0.1:1"],
        env={**base, **env, "TMPDIR": str(tmp_path)}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert message in done.stderr
