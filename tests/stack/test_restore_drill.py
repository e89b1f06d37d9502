"""The restore drill on the running stack (issue 12): back up, destroy the volumes, restore, compare.

With the writers stopped, every table of every database is fingerprinted (row count and md5 of its
rows in a fixed order) and every object of the bucket hashed; `make backup` archives it; `docker
compose down --volumes` destroys Postgres's and S3's volumes; the backup job restores the archive
into the empty stores, and the fingerprints and hashes must be equal, 100%: runs, metrics, versions,
aliases, users, prediction rows, artifacts. `make up` then brings the platform back on the restored
data, and `make restore` refuses to overwrite it. Run only by infra/e2e.sh.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
import requests
from mlflow.tracking import MlflowClient

from tests.stack.stack import ENV, GATEWAY, MLFLOW, MODELS, REQUEST, ROOT, record_fault

DATABASES = ("mlflow", "mlflow_auth", "monitoring")


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if check:
        assert done.returncode == 0, f"{' '.join(cmd)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


def psql(database: str, query: str) -> list[str]:
    """Through the postgres container's socket (trusted there), so no password goes on a command line."""
    done = sh("docker", "compose", "exec", "-T", "postgres",
              "psql", "-U", ENV["POSTGRES_USER"], "-d", database, "-AtX", "-c", query)  # fmt: skip
    return done.stdout.splitlines()


def fingerprint() -> dict[str, str]:
    """`database.schema.table` -> "<rows> <md5 of the sorted rows as JSON>" for every table."""
    found = {}
    for database in DATABASES:
        tables = psql(
            database,
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        )
        for table in tables:
            rows = psql(
                database,
                f"SELECT count(*) || ' ' || coalesce(md5(string_agg(r, E'\\n' ORDER BY r)), '-') "  # noqa: S608
                f"FROM (SELECT row_to_json(t)::text AS r FROM {table} t) s",
            )
            found[f"{database}.{table}"] = rows[0]
    return found


def objects() -> dict[str, str]:
    """key -> sha256 of every object of the artifact bucket."""
    s3: Any = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{ENV.get('S3_API_PORT', '9000')}",
        aws_access_key_id=ENV["S3_ACCESS_KEY"],
        aws_secret_access_key=ENV["S3_SECRET_KEY"],
        region_name="us-east-1",
    )
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=ENV["S3_BUCKET"]):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=ENV["S3_BUCKET"], Key=item["Key"])["Body"].read()
            found[item["Key"]] = hashlib.sha256(body).hexdigest()
    return found


def gateway_up() -> bool:
    try:
        return requests.get(f"{GATEWAY}/health", timeout=10).status_code == 200
    except requests.RequestException:
        return False


def wait_for_prediction_rows(minimum: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while int(psql("monitoring", "SELECT count(*) FROM predictions")[0]) < minimum:
        assert time.monotonic() < deadline, "the gateway's prediction log was not written"
        time.sleep(2)


def test_backup_destroy_restore_is_equal_then_the_platform_serves_and_refuses_an_overwrite(
    tmp_path: Path,
) -> None:
    records = {"records": REQUEST["dataframe_records"]}
    for _ in range(5):
        answer = requests.post(f"{GATEWAY}/models/{MODELS[0]}/predict", json=records, timeout=30)
        assert answer.status_code == 200, answer.text
    wait_for_prediction_rows(5)
    writers = sh("python3", "infra/stack.py", "writers").stdout.split()
    sh("docker", "compose", "stop", *writers)
    archive = ""
    try:
        before, stored = fingerprint(), objects()
        assert int(before["mlflow.public.runs"].split()[0]) > 0 and stored

        started = time.monotonic()
        backup = sh("make", "--no-print-directory", "backup")
        archive = next(line.split()[1] for line in backup.stdout.splitlines() if line.startswith("backup: "))
        took_backup = time.monotonic() - started
        verified = sh("make", "--no-print-directory", "verify-backup", f"FROM={archive}")
        assert "checksums match" in verified.stdout

        sh("docker", "compose", "down", "--volumes", "--remove-orphans")
        started = time.monotonic()
        restored = sh("docker", "compose", "run", "--rm", "--pull", "never", "backup", "restore", archive)
        took_restore = time.monotonic() - started
        assert "counts verified" in restored.stdout
        assert fingerprint() == before
        assert objects() == stored

        sh("make", "--no-print-directory", "up")
        client = MlflowClient(MLFLOW)
        for name in MODELS:
            production = client.get_model_version_by_alias(name, "production")
            files = client.list_artifacts(production.run_id)
            assert files, f"{name} v{production.version}: no artifacts after the restore"
        answer = requests.post(f"{GATEWAY}/models/{MODELS[0]}/predict", json=records, timeout=60)
        assert answer.status_code == 200, answer.text

        refused = sh("make", "--no-print-directory", "restore", f"FROM={archive}", check=False)
        assert refused.returncode != 0 and "not empty" in refused.stdout + refused.stderr
        assert requests.get(f"{GATEWAY}/health", timeout=10).status_code == 200  # nothing was stopped
        record_fault(
            "restore drill",
            {
                "backup_s": round(took_backup, 1),
                "restore_s": round(took_restore, 1),
                "tables": len(before),
                "rows": sum(int(rows.split()[0]) for rows in before.values()),
                "objects": len(stored),
                "equal": "100%",  # asserted above: every table's fingerprint, every object's hash
            },
        )
    finally:
        if archive:
            Path(ROOT / archive).unlink(missing_ok=True)
        # Whatever failed, the checks after this one find the platform running again.
        if not gateway_up():
            sh("make", "--no-print-directory", "up", check=False)
