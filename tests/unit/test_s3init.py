"""The bucket init job against a real S3 server (SeaweedFS on loopback, credentials enforced)."""

from __future__ import annotations

import subprocess
import sys

from services import s3init
from services.s3init.bucket import run
from tests.conftest import free_port, python_env


def test_creates_then_is_safe_to_rerun(s3_endpoint: str, aws_env: None) -> None:
    settings = s3init.Settings.from_env(dict(S3_ENDPOINT_URL=s3_endpoint, S3_BUCKET="artifacts-a"))
    assert run(settings) is True
    assert run(settings) is False  # second run: exists, nothing changes


def test_job_exits_nonzero_with_one_line_when_the_store_is_down(aws_env: None) -> None:
    env = {**python_env(), "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "S3_INIT_ATTEMPTS": "2"}
    done = subprocess.run([sys.executable, "-m", "services.s3init"], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("create-bucket: error:")
    assert "Traceback" not in done.stderr


def test_job_prints_what_it_did(s3_endpoint: str, aws_env: None) -> None:
    env = {**python_env(), "S3_ENDPOINT_URL": s3_endpoint, "S3_BUCKET": "artifacts-b"}
    first = subprocess.run([sys.executable, "-m", "services.s3init"], env=env, capture_output=True, text=True)
    again = subprocess.run([sys.executable, "-m", "services.s3init"], env=env, capture_output=True, text=True)
    assert (first.returncode, again.returncode) == (0, 0)
    assert "'artifacts-b' created" in first.stdout and "'artifacts-b' exists" in again.stdout
