"""The database init job against a real PostgreSQL cluster with password authentication: each
service's role can do its job and is refused the rest; the job is safe to re-run; a platform whose
MLflow tables the superuser created is handed to MLflow's role, on which `mlflow db upgrade` and a
real `mlflow server` (with basic-auth in `mlflow_auth`) then work; Grafana's dashboard queries run on
its read-only views."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from mlflow.tracking import MlflowClient
from psycopg2.extras import execute_values

from contracts import database as names
from contracts import predlog
from contracts.predlog import FEEDBACK_INSERT, FEEDBACK_TEMPLATE, INSERT, INSERT_TEMPLATE
from contracts.settings import sqlalchemy_uri
from services.local import Processes, generated_auth, postgres_bindir, start_mlflow, start_postgres
from tests.conftest import ROOT, free_port, python_env, require

pytestmark = pytest.mark.integration

PASSWORDS = {
    names.MLFLOW_ROLE: "mlflow-role-password-123",
    names.GATEWAY_ROLE: "gateway-role-password-123",
    names.MONITOR_ROLE: "monitor-role-password-123",
    names.ORCHESTRATOR_ROLE: "orchestrator-role-password-123",
    names.GRAFANA_ROLE: "grafana-role-password-123",
}
PASSWORD_ENV = {
    names.MLFLOW_ROLE: "POSTGRES_MLFLOW_PASSWORD",
    names.GATEWAY_ROLE: "POSTGRES_GATEWAY_PASSWORD",
    names.MONITOR_ROLE: "POSTGRES_MONITOR_PASSWORD",
    names.ORCHESTRATOR_ROLE: "POSTGRES_ORCHESTRATOR_PASSWORD",
    names.GRAFANA_ROLE: "POSTGRES_GRAFANA_PASSWORD",
}
REFUSED = (psycopg2.errors.InsufficientPrivilege, psycopg2.errors.ReadOnlySqlTransaction)


@dataclass
class Cluster:
    base: Path
    procs: Processes
    port: int

    def uri(self, database: str, role: str = "mlflow", password: str | None = None) -> str:
        """The superuser `mlflow` (trusted), or a role with its password."""
        secret = f":{password if password is not None else PASSWORDS[role]}" if role != "mlflow" else ""
        return f"postgresql://{role}{secret}@127.0.0.1:{self.port}/{database}"

    @contextmanager
    def connect(self, database: str, role: str = "mlflow", password: str | None = None) -> Iterator[Any]:
        """An autocommit connection (psycopg2's own `with conn` would open a transaction)."""
        conn = psycopg2.connect(self.uri(database, role, password))
        try:
            conn.autocommit = True
            yield conn
        finally:
            conn.close()


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env={**python_env(), **env}, cwd=ROOT, capture_output=True, text=True)


def run_dbinit(cluster: Cluster, admin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {PASSWORD_ENV[role]: password for role, password in PASSWORDS.items()}
    env.update(POSTGRES_ADMIN_URI=admin or cluster.uri("mlflow"), DBINIT_ATTEMPTS="2")
    return run([sys.executable, "-m", "services.dbinit"], env)


def query(conn: Any, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall() if cur.description else []


def assert_login_refused(
    cluster: Cluster,
    database: str,
    role: str,
    password: str | None = None,
    why: str = "permission denied for database",
) -> None:
    with pytest.raises(psycopg2.OperationalError, match=why), cluster.connect(database, role, password):
        pass


def not_owned_by_mlflow_role(cluster: Cluster, database: str) -> list[tuple[Any, ...]]:
    with cluster.connect(database) as conn:
        return query(
            conn,
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema' "
            "AND pg_get_userbyid(c.relowner) <> %s",
            (names.MLFLOW_ROLE,),
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Its own cluster: the superuser `mlflow` trusted on loopback, every other role by SCRAM password
    (as in the stack); MLflow's and the user store's tables created by the superuser, as an older
    platform (and `make upgrade`) did, before the job ever ran."""
    require("PostgreSQL server (Debian package postgresql)", postgres_bindir())
    base = tmp_path_factory.mktemp("dbinit")
    procs = Processes(log_dir=base / "logs")
    port = free_port()
    try:
        start_postgres(procs, base / "pg", port)
        hba = base / "pg" / "data" / "pg_hba.conf"
        hba.write_text(
            "local all all trust\nhost all mlflow 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        found = Cluster(base, procs, port)
        with found.connect("mlflow") as conn:
            query(conn, "SELECT pg_reload_conf()")
        upgraded = run(
            [sys.executable, "-m", "services.backup", "upgrade"],
            {"POSTGRES_ADMIN_URI": found.uri("mlflow"), "S3_ENDPOINT_URL": "http://127.0.0.1:1"},
        )
        assert upgraded.returncode == 0, upgraded.stderr
        assert not_owned_by_mlflow_role(found, "mlflow"), "the superuser should own MLflow's tables here"
        yield found
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def initialised(cluster: Cluster) -> Cluster:
    first, again = run_dbinit(cluster), run_dbinit(cluster)
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    assert "database 'monitoring' created" in first.stdout, first.stdout
    print(first.stdout)
    assert f"role '{names.GATEWAY_ROLE}' created" in first.stdout
    assert "database 'monitoring' exists" in again.stdout
    assert f"role '{names.GATEWAY_ROLE}' exists" in again.stdout
    assert "mlflow: owned by 'mlflow_server' (0 objects handed over)" in again.stdout, again.stdout
    return cluster


def test_the_superusers_mlflow_tables_are_handed_to_mlflows_role(initialised: Cluster) -> None:
    for database in (names.MLFLOW_DATABASE, names.AUTH_DATABASE):
        assert not_owned_by_mlflow_role(initialised, database) == [], database
    with initialised.connect("mlflow") as conn:
        owners = query(
            conn,
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s)",
            ([names.MLFLOW_DATABASE, names.AUTH_DATABASE],),
        )
        assert {owner for _, owner in owners} == {names.MLFLOW_ROLE}
        attributes = query(
            conn,
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = ANY(%s)",
            (list(PASSWORDS),),
        )
    assert len(attributes) == len(PASSWORDS) and all(not any(flags) for _, *flags in attributes), attributes


def test_a_wrong_password_is_refused(initialised: Cluster) -> None:
    assert_login_refused(
        initialised, "monitoring", names.GATEWAY_ROLE, "not-the-password-12", "password authentication failed"
    )


def test_the_gateway_role_appends_predictions_and_feedback_and_nothing_else(initialised: Cluster) -> None:
    with initialised.connect("monitoring", names.GATEWAY_ROLE) as conn, conn.cursor() as cur:
        row = (1.0e9, "req-roles-1", "m", "1", json.dumps({"a": 1}), 2.0, 1.5)
        execute_values(cur, INSERT, [row], template=INSERT_TEMPLATE)  # the gateway's own statements
        assert predlog.match(cur, "m", ["req-roles-1", "nope"]) == predlog.Match({"req-roles-1"}, set())
        execute_values(cur, FEEDBACK_INSERT, [("req-roles-1", 3.0, 1.0e9)], template=FEEDBACK_TEMPLATE)
        assert predlog.match(cur, "m", ["req-roles-1"]) == predlog.Match(set(), {"req-roles-1"})
        for statement in (
            "UPDATE predictions SET model = 'x'",
            "UPDATE feedback SET actual = 0",  # feedback is appended, never changed
            "DELETE FROM predictions",
            "DELETE FROM feedback",
            "TRUNCATE predictions",
            "CREATE TABLE spare (x int)",
            "DROP TABLE predictions",
            "UPDATE alembic_version SET version_num = 'x'",  # the migrations' own table
            "DELETE FROM alembic_version",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)
    for database in (names.MLFLOW_DATABASE, names.AUTH_DATABASE):  # MLflow's tables: not even a login
        assert_login_refused(initialised, database, names.GATEWAY_ROLE)


WRITES = (
    "INSERT INTO predictions (ts, request_id, model, version, features) VALUES (now(), 'o', 'm', '1', '{}')",
    "INSERT INTO feedback (request_id, model, actual, ts) VALUES ('o', 'm', 1, now())",
    "UPDATE predictions SET prediction = 1",
    "DELETE FROM feedback",
    "CREATE TABLE spare (x int)",
    "UPDATE alembic_version SET version_num = 'x'",
)


@pytest.mark.parametrize("role", [names.MONITOR_ROLE, names.ORCHESTRATOR_ROLE])
def test_the_monitor_and_the_orchestrator_only_read_the_prediction_log(
    initialised: Cluster, role: str
) -> None:
    since = datetime(2000, 1, 1, tzinfo=UTC)
    with initialised.connect("monitoring", role) as conn, conn.cursor() as cur:
        predlog.labelled_rows(cur, "m", since, datetime.now(UTC))  # what each runs
        if role == names.MONITOR_ROLE:
            predlog.drift_window(cur, "m", "1", 100, 20, since)
            predlog.live_quality(cur, "m", "1", 100, since)
        else:  # the orchestrator reads labelled rows only
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("SELECT count(*) FROM predictions")
        for statement in WRITES:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)
    assert_login_refused(initialised, names.MLFLOW_DATABASE, role)


@pytest.fixture(scope="module")
def tracking(initialised: Cluster) -> Iterator[tuple[str, dict[str, str]]]:
    """A real `mlflow server` with basic-auth as MLflow's role: `mlflow db upgrade` (start_mlflow)
    and the auth store's migrations run as that role, then the views are created as the container
    does (services/mlflow/migrate.py). One run with the params and metrics the dashboards show."""
    base = initialised.base / "tracking"
    backend = sqlalchemy_uri(initialised.uri("mlflow", names.MLFLOW_ROLE))
    migrated = run([sys.executable, "-m", "services.mlflow.migrate"], {"MLFLOW_BACKEND_STORE_URI": backend})
    assert migrated.returncode == 0, migrated.stderr
    auth_store = sqlalchemy_uri(initialised.uri("mlflow_auth", names.MLFLOW_ROLE))
    auth = generated_auth(auth_store, base / "auth.env")
    procs = Processes(log_dir=base / "logs")
    try:
        url = start_mlflow(procs, backend, base, free_port(), timeout=240, auth=auth)
        yield url, auth.login("admin")
    finally:
        procs.stop_all()


def test_mlflow_serves_as_its_role_and_grafanas_dashboard_queries_read_the_views(
    initialised: Cluster, tracking: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, login = tracking
    for key, value in login.items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(url)
    run_ = client.create_run(client.create_experiment("roles"), run_name="roles-run")
    for key, value in {"model": "rf", "target": "latency_ms", "secret_param": "hidden"}.items():
        client.log_param(run_.info.run_id, key, value)
    client.log_metric(run_.info.run_id, "test_r2", 0.9)
    client.log_metric(run_.info.run_id, "test_rmse", 1.5)
    client.set_terminated(run_.info.run_id)

    board = json.loads((ROOT / "grafana/dashboards/platform-overview.json").read_text())
    queries = [
        target["rawSql"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if "mlflow-db" in (panel.get("datasource", {}).get("uid"), target.get("datasource", {}).get("uid"))
    ]
    assert len(queries) == 3
    with initialised.connect("mlflow", names.GRAFANA_ROLE) as conn:
        for sql_text in queries:
            filled = sql_text.replace("$target", "'latency_ms'").replace("$__from", "0")
            rows = query(conn, filled.replace("$__to", str(2**62)))
            assert rows, sql_text
        assert query(conn, "SELECT DISTINCT key FROM grafana.params ORDER BY 1") == [("model",), ("target",)]


def test_the_grafana_role_reads_its_views_only_and_cannot_write_or_escape(
    initialised: Cluster, tracking: tuple[str, dict[str, str]]
) -> None:
    with initialised.connect("mlflow", names.GRAFANA_ROLE) as conn, conn.cursor() as cur:
        cur.execute("SHOW default_transaction_read_only")
        assert cur.fetchone() == ("on",)
        cur.execute("SELECT count(*) FROM grafana.runs")
        for statement in (
            "SELECT * FROM public.runs",
            "SELECT * FROM public.params",
            "INSERT INTO grafana.experiments (experiment_id, name) VALUES (99, 'x')",
            "CREATE TABLE grafana.spare (x int)",
            "COPY (SELECT 1) TO PROGRAM 'true'",
        ):
            with pytest.raises(REFUSED):
                cur.execute(statement)
        # The read-only default is a convenience; the grants hold even in a read-write transaction.
        cur.execute("SET default_transaction_read_only = off")
        for statement in (
            "CREATE TABLE public.spare (x int)",
            "CREATE TEMP TABLE spare (x int)",
            "INSERT INTO grafana.experiments (experiment_id, name) VALUES (99, 'x')",
            "UPDATE public.model_versions SET source = 'x'",
            "COPY (SELECT 1) TO PROGRAM 'true'",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)
    for database in (names.AUTH_DATABASE, names.MONITORING_DATABASE, "postgres"):
        assert_login_refused(initialised, database, names.GRAFANA_ROLE)


def test_mlflows_role_is_no_superuser_and_stays_out_of_the_prediction_log(initialised: Cluster) -> None:
    with initialised.connect("mlflow", names.MLFLOW_ROLE) as conn, conn.cursor() as cur:
        for statement in (
            "CREATE ROLE intruder",
            "CREATE DATABASE other",
            "COPY (SELECT 1) TO PROGRAM 'true'",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)
    assert_login_refused(initialised, names.MONITORING_DATABASE, names.MLFLOW_ROLE)


def test_a_service_role_as_admin_and_an_unreachable_server_are_one_line_and_nonzero(
    initialised: Cluster,
) -> None:
    as_role = run_dbinit(initialised, initialised.uri("mlflow", names.MLFLOW_ROLE))
    assert as_role.returncode == 1
    assert as_role.stderr.strip() == (
        "create-databases: error: POSTGRES_USER is 'mlflow_server', the name of a service's role: "
        "choose another superuser name"
    )
    down = run_dbinit(initialised, f"postgresql://mlflow@127.0.0.1:{free_port()}/mlflow")
    assert down.returncode == 1
    assert down.stderr.strip().startswith("create-databases: error:") and "Traceback" not in down.stderr
