"""Backups against real components: two PostgreSQL clusters (the platform and an empty one to restore
into), the S3 test server, and a real MLflow tracking server writing runs, models and artifacts.

Backed up, restored into fresh databases and an empty bucket, then compared table by table and
object by object; a restored tracking server answers with the same runs, metrics, versions, aliases
and artifacts. Refusals, --force, damaged archives and a backup taken during writes are covered too.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import mlflow
import numpy as np
import psycopg2
import pytest
from mlflow import MlflowClient
from psycopg2 import sql
from sklearn.linear_model import LinearRegression

from contracts.database import GATEWAY_ROLE, MLFLOW_ROLE
from contracts.predlog_migrations import head
from contracts.settings import libpq_uri, sqlalchemy_uri
from services.local import Processes, mlflow_server_cmd, start_postgres, wait_http
from tests.conftest import ROOT, free_port, python_env
from tests.predlog_support import LEGACY_SCHEMA as PREDICTIONS_SCHEMA

pytestmark = pytest.mark.integration

DATABASES = ("mlflow", "mlflow_auth", "monitoring")
# The bootstrap job's settings besides POSTGRES_ADMIN_URI (trust auth here: any password logs in).
ROLE_PASSWORDS = {
    f"POSTGRES_{name}_PASSWORD": f"{name.lower()}-password-1234"
    for name in ("MLFLOW", "GATEWAY", "MONITOR", "ORCHESTRATOR", "GRAFANA")
}
MODEL = "backup-test-model"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.backup", *args],
        env={**python_env(), **env}, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def one_line_error(done: subprocess.CompletedProcess[str], command: str) -> str:
    """The failure is exit 1 with exactly one line on stderr, no stack trace."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def bucket_contents(endpoint: str, bucket: str) -> dict[str, str]:
    """key -> sha256 of every object."""
    s3 = s3_client(endpoint)
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"]] = hashlib.sha256(body).hexdigest()
    return found


def database_uri(cluster: str, database: str, user: str = "mlflow") -> str:
    """The cluster's URI (trust auth: the superuser `mlflow`) on `database`, as `user`."""
    return libpq_uri(cluster).rsplit("/", 1)[0].replace("//mlflow@", f"//{user}@") + "/" + database


def table_rows(cluster: str, database: str) -> dict[str, list[str]]:
    """Every table of `database` -> its rows as JSON text, sorted: equal means the same content."""
    conn = psycopg2.connect(database_uri(cluster, database))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT schemaname, tablename FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            )
            tables = cur.fetchall()
            rows = {}
            for schema, table in tables:
                query = sql.SQL("SELECT row_to_json(t)::text FROM {}.{} t").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
                cur.execute(query)
                rows[f"{schema}.{table}"] = sorted(r[0] for r in cur.fetchall())
        return rows
    finally:
        conn.close()


def execute(
    cluster: str, database: str, statement: str, params: tuple[Any, ...] = (), user: str = "mlflow"
) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(database_uri(cluster, database, user))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def reset_cluster(cluster: str) -> None:
    """The platform's databases dropped; an empty `mlflow` database, as the postgres image makes."""
    conn = psycopg2.connect(database_uri(cluster, "postgres"))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in DATABASES:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            cur.execute("CREATE DATABASE mlflow")
    finally:
        conn.close()


@dataclass
class Lab:
    """A source platform (Postgres + bucket + MLflow server) and an empty target cluster."""

    base: Path
    procs: Processes
    source: str
    target: str
    endpoint: str
    source_bucket: str = "backup-source"
    tracking: str = ""
    run_ids: list[str] = field(default_factory=list)

    def env(self, cluster: str, bucket: str, **extra: str) -> dict[str, str]:
        return {
            "POSTGRES_ADMIN_URI": libpq_uri(cluster),
            "S3_ENDPOINT_URL": self.endpoint,
            "S3_BUCKET": bucket,
            "BACKUP_DIR": str(self.base / "backups"),
            **extra,
        }

    def source_env(self) -> dict[str, str]:
        return self.env(self.source, self.source_bucket)

    def backup(self) -> Path:
        done = run_cli("backup", env=self.source_env())
        assert done.returncode == 0, done.stderr
        first = done.stdout.splitlines()[0]
        return Path(first.split()[1])

    def populate(self) -> None:
        """Once, with the S3 credentials of the test's `aws_env`: schemas, an auth user, a tracking
        server with runs, metrics, artifacts, two model versions and an alias, prediction-log rows,
        and objects with awkward keys."""
        if self.tracking:
            return
        reset_cluster(self.source)
        s3_client(self.endpoint).create_bucket(Bucket=self.source_bucket)
        upgraded = run_cli("upgrade", env=self.source_env())  # creates MLflow's and the auth schemas
        assert upgraded.returncode == 0, upgraded.stderr
        assert "mlflow.alembic_version none ->" in upgraded.stdout
        assert "mlflow_auth.alembic_version_auth none ->" in upgraded.stdout
        execute(
            self.source, "mlflow_auth",
            "INSERT INTO users (username, password_hash, is_admin) VALUES ('alice', 'hash-of-alice', false)",
        )  # fmt: skip
        execute(self.source, "postgres", "CREATE DATABASE monitoring")
        execute(self.source, "monitoring", PREDICTIONS_SCHEMA)
        for i in range(40):
            execute(
                self.source, "monitoring",
                "INSERT INTO predictions (ts, request_id, model, version, features, prediction, latency_ms) "
                "VALUES (now(), %s, %s, '1', %s, %s, 1.5)",
                (f"req-{i}", MODEL, json.dumps({"hop_count": i}), float(i)),
            )  # fmt: skip
        self.tracking = self.start_tracking(self.source, self.source_bucket, "source")
        client = MlflowClient(self.tracking)
        experiment = client.create_experiment("backup-test")
        for i in range(3):
            run = client.create_run(experiment, run_name=f"run-{i}", tags={"team": "a"})
            client.log_param(run.info.run_id, "alpha", str(i))
            for step in range(5):
                client.log_metric(run.info.run_id, "rmse", 1.0 / (step + 1 + i), step=step)
            note = self.base / f"note-{i}.txt"
            note.write_text(f"run {i}\n" * 100)
            client.log_artifact(run.info.run_id, str(note), "notes")
            client.set_terminated(run.info.run_id)
            self.run_ids.append(run.info.run_id)
        mlflow.set_tracking_uri(self.tracking)
        mlflow.set_experiment("backup-test")
        x = np.arange(20, dtype=float).reshape(-1, 1)
        for slope in (2.0, 3.0):
            with mlflow.start_run():
                mlflow.sklearn.log_model(
                    LinearRegression().fit(x, slope * x.ravel()), name="model", registered_model_name=MODEL,
                    serialization_format="cloudpickle",
                )  # fmt: skip
        client.set_registered_model_alias(MODEL, "production", "2")
        s3 = s3_client(self.endpoint)
        for key, body in {
            "other/with space/ünïcode.bin": os.urandom(3000),
            "other/empty": b"",
            "other/double//slash": b"x",
            "other/big.bin": os.urandom(6 * 1024 * 1024),  # multipart on the way back
        }.items():
            s3.put_object(Bucket=self.source_bucket, Key=key, Body=body)

    def start_tracking(self, cluster: str, bucket: str, name: str, user: str = "mlflow") -> str:
        port = free_port()
        backend = sqlalchemy_uri(database_uri(cluster, "mlflow", user))
        cmd = mlflow_server_cmd(backend, self.base / name, port, self.base / f"{name}-metrics")
        cmd[cmd.index("--artifacts-destination") + 1] = f"s3proxied://{bucket}/artifacts"
        (self.base / f"{name}-metrics").mkdir(exist_ok=True)
        env = {"MLFLOW_S3_ENDPOINT_URL": self.endpoint, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        proc = self.procs.start(f"mlflow-{name}", cmd, env)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", proc, 180, f"the {name} MLflow server")
        return url


@pytest.fixture(scope="module")
def lab(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("backup")
    procs, clusters = Processes(log_dir=base / "logs"), Processes(log_dir=base / "logs-target")
    try:
        source = start_postgres(procs, base / "source-pg", free_port())
        target = start_postgres(clusters, base / "target-pg", free_port())
        yield Lab(base, procs, source, target, s3_endpoint)
    finally:
        procs.stop_all()
        clusters.stop_all()


@pytest.fixture
def populated(lab: Lab, aws_env: None) -> Lab:
    lab.populate()
    return lab


def fresh_target(lab: Lab, bucket: str) -> dict[str, str]:
    reset_cluster(lab.target)
    return lab.env(lab.target, bucket)


def test_backup_restore_round_trip_is_equal_table_by_table_and_byte_for_byte(populated: Lab) -> None:
    lab = populated
    done = run_cli("backup", env=lab.source_env())
    assert done.returncode == 0, done.stderr
    archive = Path(done.stdout.splitlines()[0].split()[1])
    assert archive.name.startswith("mlops-") and archive.suffix == ".tar" and archive.exists()
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    assert "5 runs, 1 registered models, 2 versions" in done.stdout, done.stdout
    assert not list(archive.parent.glob(".*")), "scratch or partial files left behind"

    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert names[-1] == "manifest.json"
    assert manifest["dump_order"] == ["mlflow_auth", "monitoring", "mlflow"]
    assert manifest["databases"]["monitoring"]["tables"]["public.predictions"] == 40
    assert manifest["databases"]["mlflow"]["tables"]["public.runs"] == 5
    revision = execute(lab.source, "mlflow", "SELECT version_num FROM alembic_version")[0][0]
    assert manifest["mlflow_schema_revision"] == revision
    source_objects = bucket_contents(lab.endpoint, lab.source_bucket)
    assert manifest["objects"]["count"] == len(source_objects) >= 4 + 3 + 2
    assert {m["key"] for m in manifest["members"].values() if "key" in m} == set(source_objects)
    assert {"pg_dump", "postgres_server", "mlflow", "boto3"} <= set(manifest["tools"])

    verified = run_cli("verify", str(archive), env={})
    assert verified.returncode == 0 and "checksums match" in verified.stdout, verified.stderr

    env = fresh_target(lab, "restored")
    restored = run_cli("restore", str(archive), env=env)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith("restore: ") and "counts verified" in restored.stdout
    for database in DATABASES:
        assert table_rows(lab.target, database) == table_rows(lab.source, database), database
    assert bucket_contents(lab.endpoint, "restored") == source_objects

    # The bootstrap job (make up, after make restore) hands the restored data to the services' roles:
    # a tracking server as MLflow's role, on the restored store and bucket, answers as the original did.
    roles = subprocess.run(
        [sys.executable, "-m", "services.dbinit"], env={**python_env(), **env, **ROLE_PASSWORDS},
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert roles.returncode == 0, roles.stderr
    assert "mlflow: owned by 'mlflow_server'" in roles.stdout
    # The archived log predates the migrations (no version table): stamped at the baseline, rows kept.
    assert f"prediction log schema {head()} (the existing table stamped at 0001, rows kept)" in roles.stdout
    assert execute(lab.target, "monitoring", "SELECT version_num FROM alembic_version") == [(head(),)]
    assert execute(lab.target, "monitoring", "SELECT count(*) FROM predictions") == [(40,)]
    restored_tracking = lab.start_tracking(lab.target, "restored", "restored", user=MLFLOW_ROLE)
    execute(
        lab.target, "monitoring",
        "INSERT INTO predictions (ts, request_id, model, version, features) "
        "VALUES (now(), 'new', 'm', '1', '{}')",
        user=GATEWAY_ROLE,
    )  # fmt: skip
    before, after = MlflowClient(lab.tracking), MlflowClient(restored_tracking)
    for run_id in lab.run_ids:
        assert after.get_run(run_id).data.metrics == before.get_run(run_id).data.metrics
        history = [(m.step, m.value) for m in after.get_metric_history(run_id, "rmse")]
        assert history == [(m.step, m.value) for m in before.get_metric_history(run_id, "rmse")]
        path = after.download_artifacts(run_id, "notes", str(lab.base / "download" / run_id))
        assert sorted(p.name for p in Path(path).iterdir()) == [f"note-{lab.run_ids.index(run_id)}.txt"]
    versions = sorted((v.version, v.status) for v in after.search_model_versions(f"name='{MODEL}'"))
    assert versions == [("1", "READY"), ("2", "READY")]
    assert after.get_model_version_by_alias(MODEL, "production").version == "2"
    mlflow.set_tracking_uri(restored_tracking)
    model = mlflow.sklearn.load_model(f"models:/{MODEL}@production")
    assert model.predict(np.array([[10.0]]))[0] == pytest.approx(30.0)


def test_restore_refuses_a_platform_with_data_and_force_overwrites_it(populated: Lab) -> None:
    lab = populated
    archive = lab.backup()
    env = fresh_target(lab, "refusal")
    assert run_cli("restore", str(archive), env=env).returncode == 0
    execute(lab.target, "monitoring", "DELETE FROM predictions WHERE request_id = 'req-0'")

    refused = run_cli("restore", str(archive), env=env)
    line = one_line_error(refused, "restore")
    assert "not empty" in line and "--force" in line and "objects in bucket refusal" in line
    assert (
        "mlflow: 5 runs, 1 registered_models, 2 logged_models" in line
        and "monitoring: 39 predictions" in line
    )
    assert execute(lab.target, "monitoring", "SELECT count(*) FROM predictions")[0][0] == 39  # untouched

    checked = run_cli("restore", "--check", str(archive), env=env)  # make restore's first step
    assert "not empty" in one_line_error(checked, "restore")
    checked = run_cli("restore", "--check", "--force", str(archive), env=env)
    assert checked.returncode == 0 and "holds data that --force overwrites" in checked.stdout, checked.stderr
    assert execute(lab.target, "monitoring", "SELECT count(*) FROM predictions")[0][0] == 39  # untouched

    forced = run_cli("restore", str(archive), "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    for database in DATABASES:
        assert table_rows(lab.target, database) == table_rows(lab.source, database), database

    # Objects alone make a target non-empty too.
    only_objects = fresh_target(lab, "refusal")
    line = one_line_error(run_cli("restore", str(archive), env=only_objects), "restore")
    assert "objects in bucket refusal" in line and "mlflow:" not in line


def test_upgrade_migrates_the_prediction_log_and_archives_carry_its_revision(populated: Lab) -> None:
    """`make upgrade` on a platform whose log predates the migrations: stamped and migrated, no row
    lost. An archive made afterwards holds the log's revision, and a restore followed by the
    bootstrap job (make restore ends with make up) leaves it as it was."""
    lab = populated
    archive = lab.backup()  # the source's log has no version table
    env = fresh_target(lab, "upgraded")
    assert run_cli("restore", str(archive), env=env).returncode == 0
    upgraded = run_cli("upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"monitoring.alembic_version none -> {head()}" in upgraded.stdout, upgraded.stdout
    assert execute(lab.target, "monitoring", "SELECT count(*) FROM predictions") == [(40,)]
    again = run_cli("upgrade", env=env)
    assert f"monitoring.alembic_version {head()} -> {head()}" in again.stdout, again.stdout + again.stderr
    # The old archive forced onto the upgraded platform: restored whole, not merged into the newer
    # schema (whose view on `predictions` would block dropping it); the bootstrap job migrates it.
    forced = run_cli("restore", str(archive), "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    old = subprocess.run(
        [sys.executable, "-m", "services.dbinit"], env={**python_env(), **env, **ROLE_PASSWORDS},
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert old.returncode == 0 and f"schema {head()} (the existing table stamped" in old.stdout, old.stderr
    assert execute(lab.target, "monitoring", "SELECT count(*) FROM predictions") == [(40,)]

    done = run_cli("backup", env=env)
    assert done.returncode == 0, done.stderr
    migrated = Path(done.stdout.splitlines()[0].split()[1])
    with tarfile.open(migrated) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest["databases"]["monitoring"]["tables"]["public.alembic_version"] == 1
    env = fresh_target(lab, "upgraded-restored")
    assert run_cli("restore", str(migrated), env=env).returncode == 0
    roles = subprocess.run(
        [sys.executable, "-m", "services.dbinit"], env={**python_env(), **env, **ROLE_PASSWORDS},
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert roles.returncode == 0, roles.stderr
    assert f"monitoring: prediction log schema {head()};" in roles.stdout  # nothing to stamp or migrate
    assert execute(lab.target, "monitoring", "SELECT count(*) FROM predictions") == [(40,)]


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "not a tar", "missing"])
def test_a_damaged_archive_is_one_line_and_touches_nothing(
    populated: Lab, damage: str, tmp_path: Path
) -> None:
    lab = populated
    archive = lab.backup()
    broken = tmp_path / "broken.tar"
    data = bytearray(archive.read_bytes())
    if damage == "flipped byte":
        with tarfile.open(archive) as tar:  # a byte inside the MLflow store's dump
            offset = tar.getmember("databases/mlflow.dump").offset_data + 100
        data[offset] ^= 0xFF
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "not a tar":
        data = bytearray(b"hello, this is not an archive\n" * 100)
    if damage != "missing":
        broken.write_bytes(bytes(data))

    line = one_line_error(run_cli("verify", str(broken), env={}), "verify")
    assert str(broken) in line

    env = fresh_target(lab, f"damaged-{damage.replace(' ', '-')}")
    execute(lab.target, "mlflow", "CREATE TABLE sentinel (x int)")
    line = one_line_error(run_cli("restore", str(broken), "--force", env=env), "restore")
    assert str(broken) in line
    # Nothing was touched: no database made, the sentinel table is there, no bucket created.
    names = {r[0] for r in execute(lab.target, "postgres", "SELECT datname FROM pg_database")}
    assert "monitoring" not in names and "mlflow_auth" not in names
    assert execute(lab.target, "mlflow", "SELECT count(*) FROM sentinel")[0][0] == 0
    buckets = [b["Name"] for b in s3_client(lab.endpoint).list_buckets()["Buckets"]]
    assert env["S3_BUCKET"] not in buckets


def test_bad_settings_and_unreachable_servers_are_one_line(populated: Lab) -> None:
    lab = populated
    no_settings = {
        k: v for k, v in python_env().items() if k not in ("POSTGRES_ADMIN_URI", "S3_ENDPOINT_URL")
    }
    done = subprocess.run([sys.executable, "-m", "services.backup", "backup"], env=no_settings, cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert "POSTGRES_ADMIN_URI" in one_line_error(done, "backup")
    down = lab.env(f"postgresql://mlflow@127.0.0.1:{free_port()}/mlflow", lab.source_bucket)
    assert "PostgreSQL" in one_line_error(run_cli("backup", env=down), "backup")
    assert not list((lab.base / "backups").glob(".*"))


def test_a_backup_during_writes_restores_with_every_finished_runs_artifacts(populated: Lab) -> None:
    """Writers create runs (artifact, metric, then FINISHED) through the tracking server while the
    backup runs. Restored: every run the archive holds as FINISHED has its artifact in the bucket."""
    lab = populated
    s3 = s3_client(lab.endpoint)
    for i in range(6):  # objects that take the copy a few seconds, so the writes overlap it
        s3.put_object(Bucket=lab.source_bucket, Key=f"bulk/{i}.bin", Body=os.urandom(8 * 1024 * 1024))
    client = MlflowClient(lab.tracking)
    experiment = client.create_experiment("during-backup")
    stop, written, errors = threading.Event(), [], []

    def write(worker: int) -> None:
        note = lab.base / f"during-{worker}.txt"
        while not stop.is_set():
            try:
                run = client.create_run(experiment)
                note.write_text(f"{run.info.run_id}\n")
                client.log_artifact(run.info.run_id, str(note), "out")
                client.log_metric(run.info.run_id, "m", 1.0)
                client.set_terminated(run.info.run_id)
                written.append(run.info.run_id)
            except Exception as exc:  # noqa: BLE001  (reported below)
                errors.append(repr(exc))

    writers = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for thread in writers:
        thread.start()
    time.sleep(1)
    try:
        archive = lab.backup()
    finally:
        stop.set()
        for thread in writers:
            thread.join(timeout=60)
    assert not errors, errors[:3]
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    archived_runs = manifest["databases"]["mlflow"]["tables"]["public.runs"]
    total_runs = execute(lab.source, "mlflow", "SELECT count(*) FROM runs")[0][0]
    assert total_runs > archived_runs, "no run was written after the snapshot: the writes did not overlap"

    env = fresh_target(lab, "during")
    restored = run_cli("restore", str(archive), env=env)
    assert restored.returncode == 0, restored.stderr
    keys = set(bucket_contents(lab.endpoint, "during"))
    finished = execute(
        lab.target, "mlflow",
        "SELECT run_uuid, artifact_uri FROM runs r JOIN experiments e USING (experiment_id) "
        "WHERE e.name = 'during-backup' AND r.status = 'FINISHED'",
    )  # fmt: skip
    assert finished, "no finished run of the writers is in the archive"
    for run_id, uri in finished:
        folder = "artifacts/" + uri.removeprefix("mlflow-artifacts:/") + "/out/"
        assert any(key.startswith(folder) for key in keys), f"run {run_id} is FINISHED, its artifact missing"
