"""`python -m services.local`: the platform as local processes, no Docker (`make local`).

Same components as the compose stack, on embedded defaults: the MLflow server on SQLite with a
local artifact directory, the trainer, one serving launcher (`mlflow models serve`) per model, the
prediction gateway in front of them (with a prediction log when given a Postgres database), the
monitor, the orchestrator (retrainings run as `mlflow run` processes), and Prometheus / Grafana only
where their binaries are installed. Every server listens on
127.0.0.1. The test suite drives the same code with a Postgres backend.

This is no service but the host-side launcher, the counterpart of docker-compose.yml and its init
jobs (no image, no compose service, and nothing imports it): as the compose file names each
service's command, it calls what the services' packages export (services/access's provisioning,
services/mlflow's auth config). tests/static/test_imports.py exempts it, and only it, from the rule
that a service imports no other service.

Authentication is on, as in the stack: MLflow's basic-auth app with its user store in
`<data-dir>/auth.db`, secrets generated once into `<data-dir>/auth.env` (0600), the same service
accounts (services/access), and the participants of `participants.txt` with their logins in
`<data-dir>/participants/` (0600). Each process gets its own account's login in its environment.
The control endpoints (the orchestrator's /retrain, /rollback, /alerts, the monitor's /alerts) need
the control token in `<data-dir>/control_token` (0600, generated once), as in the stack.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from tenacity import retry, retry_if_exception_type, retry_if_result, stop_after_delay, wait_fixed

from contracts.envfile import read_env_file
from contracts.models import MODELS, format_upstreams
from contracts.predlog_migrations import apply_schema
from services.access import SERVICE_ACCOUNTS, AuthApi, add_participant, ensure_platform, read_roster
from services.common.passwords import generate_password
from services.mlflow.app import APP_NAME
from services.mlflow.auth_config import write_auth_ini

log = logging.getLogger("local")
ROOT = Path(__file__).resolve().parent.parent


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process: this venv's binaries (mlflow, uvicorn) first, telemetry off."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(extra or {})}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


@dataclass
class Processes:
    """Child processes started by local mode; stopped in reverse order."""

    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    log_dir: Path = Path(".local/logs")

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(env), cwd=ROOT, start_new_session=True
        )
        self.children.append((name, proc))
        log.info("started %s (pid %d, log %s)", name, proc.pid, self.log_dir / f"{name}.log")
        return proc

    def stop_all(self, timeout: float = 20) -> None:
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in reversed(self.children):
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", name, timeout)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.children.clear()

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    """Wait until `url` answers 200 while `proc` lives; raise RuntimeError otherwise."""

    @retry(
        retry=retry_if_exception_type(requests.RequestException) | retry_if_result(lambda ok: not ok),
        wait=wait_fixed(0.5),
        stop=stop_after_delay(timeout),
        retry_error_callback=lambda _: False,
    )
    def answers() -> bool:
        if proc.poll() is not None:  # not retried: a RuntimeError
            raise RuntimeError(f"{what} exited with code {proc.returncode} before answering {url}")
        return requests.get(url, timeout=2).status_code == 200

    if not answers():
        raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s")


def postgres_bindir() -> Path | None:
    """Debian's PostgreSQL server binaries, newest version first; None when not installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return found[-1].parent if found else None


def start_postgres(procs: Processes, base: Path, port: int, timeout: float = 30) -> str:
    """A throwaway PostgreSQL cluster in `base` on a loopback port; returns an SQLAlchemy URI.

    Trust authentication on 127.0.0.1 only: for tests and benchmarks, never for the stack.
    """
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found (Debian package postgresql)")
    data, sockets = base / "data", base / "sockets"
    sockets.mkdir(parents=True)
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        as_postgres = ["runuser", "-u", "postgres", "--"]
        for path in (base, sockets):
            shutil.chown(path, "postgres")
        for parent in base.parents:
            if parent == Path("/tmp") or parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o005)  # let postgres traverse to its directory
    subprocess.run(
        [*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", "-A", "trust", "-E", "UTF8"],
        check=True, capture_output=True,
    )  # fmt: skip
    proc = procs.start(
        "postgres",
        [*as_postgres, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
    )  # fmt: skip
    failed = RuntimeError(f"PostgreSQL did not start (log: {procs.log_dir / 'postgres.log'})")

    @retry(
        retry=retry_if_result(lambda ready: not ready),
        wait=wait_fixed(0.2),
        stop=stop_after_delay(timeout),
        retry_error_callback=lambda _: False,
    )
    def ready() -> bool:
        if proc.poll() is not None:  # not retried
            raise failed
        pg_isready = [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
        return subprocess.run(pg_isready, capture_output=True).returncode == 0

    if not ready():
        raise failed
    subprocess.run(
        [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"], check=True
    )
    return f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"


@dataclass(frozen=True)
class ServerAuth:
    """Basic-auth settings of a tracking server: its user store and the secrets it starts with."""

    database_uri: str
    admin_password: str
    secret_key: str
    admin_username: str = "admin"
    passwords: dict[str, str] = field(default_factory=dict)  # MLFLOW_<ACCOUNT>_PASSWORD -> password

    def server_env(self) -> dict[str, str]:
        return {
            "MLFLOW_AUTH_DATABASE_URI": self.database_uri,
            "MLFLOW_AUTH_ADMIN_USERNAME": self.admin_username,
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key,
        }

    def login(self, account: str) -> dict[str, str]:
        """The environment of a client logged in as a service account (or the admin)."""
        if account == self.admin_username:
            password = self.admin_password
        else:
            password = self.passwords[next(a.password_env for a in SERVICE_ACCOUNTS if a.name == account)]
        return {"MLFLOW_TRACKING_USERNAME": account, "MLFLOW_TRACKING_PASSWORD": password}

    def admin_api(self, tracking_uri: str) -> AuthApi:
        return AuthApi(tracking_uri, self.admin_username, self.admin_password)


def generated_auth(database_uri: str, secrets_file: Path) -> ServerAuth:
    """Auth settings with secrets generated once into `secrets_file` (0600) and kept across starts."""
    keys = ["MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"]
    keys += [account.password_env for account in SERVICE_ACCOUNTS]
    values = read_env_file(secrets_file) if secrets_file.exists() else {}
    missing = [key for key in keys if not values.get(key)]
    if missing:
        values.update({key: generate_password() for key in missing})
        secrets_file.parent.mkdir(parents=True, exist_ok=True)
        secrets_file.touch(mode=0o600)
        secrets_file.chmod(0o600)
        secrets_file.write_text(
            "# Secrets of local mode's tracking server (generated once; keep private).\n"
            + "".join(f"{key}={values[key]}\n" for key in keys)
        )
    return ServerAuth(
        database_uri,
        values["MLFLOW_AUTH_ADMIN_PASSWORD"],
        values["MLFLOW_FLASK_SERVER_SECRET_KEY"],
        passwords={account.password_env: values[account.password_env] for account in SERVICE_ACCOUNTS},
    )


def mlflow_server_cmd(
    backend_uri: str,
    artifacts: Path | str,
    port: int,
    metrics_dir: Path,
    app_name: str | None = None,
    workers: int = 1,
) -> list[str]:
    """`artifacts`: a local directory, or a destination URI such as `s3proxied://bucket/path`."""
    return [
        sys.executable, "-m", "mlflow", "server",
        *(["--app-name", app_name] if app_name else []),
        "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(artifacts.resolve()) if isinstance(artifacts, Path) else artifacts,
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--expose-prometheus", str(metrics_dir.resolve()),
    ]  # fmt: skip


def start_mlflow(
    procs: Processes,
    backend_uri: str,
    data_dir: Path,
    port: int,
    timeout: float = 120,
    auth: ServerAuth | None = None,
    artifacts: str | None = None,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
) -> str:
    """Migrate the store, start the tracking server (with the platform's app, basic-auth and the
    UI's first-visit defaults, when `auth` is given: services/mlflow/app.py), return its URL once
    healthy. Artifacts go to `<data_dir>/artifacts` unless `artifacts` names another
    destination (the tests' `s3proxied://`, whose S3 settings come in `extra_env`). `workers`: 2
    for a browser, whose page makes several requests at once (1 answered them late under load)."""
    metrics_dir = data_dir / "mlflow-metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    if not backend_uri.startswith("sqlite"):
        # Same order as the container: migrate first (SQLite stores are created by the server).
        subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", backend_uri], check=True, cwd=ROOT)
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(extra_env or {})}
    if auth is not None:  # the ini (with the store's URI) in a 0600 file; secrets in the environment
        ini = write_auth_ini(data_dir / "auth" / "basic_auth.ini", auth.server_env())
        env.update(auth.server_env(), MLFLOW_AUTH_CONFIG_PATH=str(ini.resolve()))
    cmd = mlflow_server_cmd(
        backend_uri,
        artifacts or data_dir / "artifacts",
        port,
        metrics_dir,
        APP_NAME if auth else None,
        workers,
    )
    proc = procs.start("mlflow", cmd, env)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", proc, timeout, "the MLflow server")
    return url


def start_serving(
    procs: Processes, tracking_uri: str, model_name: str, port: int, login: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start the serving launcher (waits for the production alias, then serves it); `login` is its
    account's MLFLOW_TRACKING_USERNAME/PASSWORD on an authenticated server."""
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "SERVING_MODEL_NAME": model_name,
        "SERVING_PORT": str(port),
        "SERVING_HOST": "127.0.0.1",
        "SERVING_POLL_S": "2",
        "SERVING_WATCH_S": "2",
        **(login or {}),
    }
    return procs.start(f"serving-{model_name}", [sys.executable, "-m", "services.serving"], env)


def start_gateway(
    procs: Processes,
    tracking_uri: str,
    upstreams: dict[str, str],
    port: int,
    monitoring_db_uri: str = "",
    login: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the prediction gateway in front of the model servers (`upstreams`: name -> base URL);
    with a Postgres `monitoring_db_uri`, it keeps the prediction log there."""
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "GATEWAY_MODELS": format_upstreams(upstreams),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_REFRESH_S": "2",
        "MONITORING_DB_URI": monitoring_db_uri,
        **(login or {}),
    }
    return procs.start("gateway", [sys.executable, "-m", "services.gateway"], env)


def control_token_file(path: Path) -> Path:
    """The control token (contracts/guard.py) in `path`, 0600, generated once and kept across starts."""
    if not path.exists() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(generate_password())
    return path


def start_monitor(
    procs: Processes,
    tracking_uri: str,
    port: int,
    login: dict[str, str] | None = None,
    control_token: Path | None = None,
    monitoring_db_uri: str = "",
) -> subprocess.Popen[bytes]:
    """Start the monitor: training-time metrics of every model for Prometheus, alert webhook (which
    needs the token in `control_token`); with a Postgres `monitoring_db_uri`, drift and live quality
    from the prediction log there."""
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MONITOR_HOST": "127.0.0.1",
        "MONITOR_PORT": str(port),
        "MONITORING_DB_URI": monitoring_db_uri,
    }
    env.update(login or {})
    if control_token is not None:
        env["CONTROL_TOKEN_FILE"] = str(control_token.resolve())
    return procs.start("monitor", [sys.executable, "-m", "services.monitor"], env)


def start_orchestrator(
    procs: Processes,
    tracking_uri: str,
    port: int,
    monitoring_db_uri: str,
    prometheus_url: str,
    upstreams: dict[str, str],
    login: dict[str, str] | None = None,
    control_token: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start the orchestrator with the process runner: retrainings are `mlflow run` children, which
    inherit its login through the environment. Its rollout watch asks the model servers (`upstreams`:
    name -> base URL) which version they serve. Its control endpoints need the token in
    `control_token`."""
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "TRAINER_TRACKING_URI": tracking_uri,
        "TRAINER_RUNNER": "process",
        "MONITORING_DB_URI": monitoring_db_uri,
        "PROMETHEUS_URL": prometheus_url,
        "ORCHESTRATOR_HOST": "127.0.0.1",
        "ORCHESTRATOR_PORT": str(port),
        "SERVING_UPSTREAMS": format_upstreams(upstreams),
        **(login or {}),
        **({"CONTROL_TOKEN_FILE": str(control_token.resolve())} if control_token else {}),
    }
    return procs.start("orchestrator", [sys.executable, "-m", "services.orchestrator"], env)


def run_trainer(
    tracking_uri: str, args: list[str], participant: str | None = None, login: dict[str, str] | None = None
) -> int:
    env = child_env({"MLFLOW_TRACKING_URI": tracking_uri, **(login or {})})
    if participant:
        env["PARTICIPANT"] = participant
    return subprocess.run([sys.executable, "-m", "trainer", *args], env=env, cwd=ROOT).returncode


def start_prometheus(
    procs: Processes,
    data_dir: Path,
    targets: dict[str, int],
    port: int,
    mlflow_login: dict[str, str] | None = None,
) -> str | None:
    """Prometheus scraping the local servers (`targets`: job -> port), if the binary is installed;
    the `mlflow` job with `mlflow_login` (MLflow answers /metrics only to admins), its password in a
    0600 file (password_file), never in the configuration."""
    binary = shutil.which("prometheus")
    if binary is None:
        log.info("prometheus is not installed: skipping it (the Docker stack has it)")
        return None
    config = data_dir / "prometheus.yml"
    auth = ""
    if mlflow_login:
        password_file = data_dir / "auth" / "prometheus-mlflow-password"
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.touch(mode=0o600)
        password_file.write_text(mlflow_login["MLFLOW_TRACKING_PASSWORD"])
        auth = (
            f"    basic_auth: {{username: {mlflow_login['MLFLOW_TRACKING_USERNAME']}, "
            f"password_file: {password_file.resolve()}}}\n"
        )
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs: [{{targets: ['127.0.0.1:{job_port}']}}]\n"
        + (auth if job == "mlflow" else "")
        for job, job_port in {**targets, "prometheus": port}.items()
    )
    config.write_text("global: {scrape_interval: 15s}\nscrape_configs:\n" + jobs)
    proc = procs.start(
        "prometheus",
        [binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir / 'prometheus'}",
         f"--web.listen-address=127.0.0.1:{port}"],
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/-/healthy", proc, 60, "prometheus")
    return f"http://127.0.0.1:{port}"


def provision(auth: ServerAuth, tracking: str, data_dir: Path, roster: Path) -> None:
    """Service accounts, platform resources and the roster's participants (services/access)."""
    api = auth.admin_api(tracking)
    try:  # the experiment the first training logs into (the trainer's default: PARTICIPANT, else the OS user)
        participant = os.environ.get("PARTICIPANT") or getpass.getuser()
    except (KeyError, OSError):
        participant = "participant"
    report = ensure_platform(api, auth.passwords, [participant])
    for name in read_roster(roster, [participant]) if roster.exists() else []:
        new = add_participant(api, name, data_dir / "participants", tracking, report, [participant])
        if new.created:
            log.info("participant %s created; login in %s (0600)", name, new.credentials)
    for line in report.lines:
        log.info("access: %s", line)


def check_ports(args: argparse.Namespace) -> None:
    """RuntimeError naming the option to change when a port the platform needs is taken."""
    model_ports = [f"{m.key}_port" for m in MODELS]  # --<key>-port, one per model in contracts
    for flag in ("mlflow_port", *model_ports, "gateway_port", "monitor_port", "orchestrator_port",
                 "prometheus_port"):  # fmt: skip
        port = getattr(args, flag)
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                option = "--" + flag.replace("_", "-")
                raise RuntimeError(
                    f"port {port} is in use: stop what uses it or choose another with {option}"
                )


def start_serving_path(
    procs: Processes, args: argparse.Namespace, tracking: str, auth: ServerAuth, urls: dict[str, str]
) -> dict[str, str]:
    """A model server per model, then the gateway in front of them; returns the model servers' URLs
    by model name and adds what a user calls to `urls`."""
    upstreams = {}
    for name, port in ((m.name, getattr(args, f"{m.key}_port")) for m in MODELS):
        proc = start_serving(procs, tracking, name, port, login=auth.login("serving"))
        if not args.no_train:
            wait_http(f"http://127.0.0.1:{port}/ping", proc, 180, f"serving {name}")
        upstreams[name] = f"http://127.0.0.1:{port}"
    # The gateway is healthy once every model server answers and each model's version is loaded;
    # without training it only has to answer.
    gateway = f"http://127.0.0.1:{args.gateway_port}"
    if args.monitoring_db_uri:
        apply_schema(args.monitoring_db_uri)  # the compose stack's create-databases job does this
    proc = start_gateway(
        procs, tracking, upstreams, args.gateway_port, args.monitoring_db_uri or "", auth.login("gateway")
    )
    ready = f"{gateway}/metrics" if args.no_train else f"{gateway}/health"
    wait_http(ready, proc, 300, "the gateway")
    urls["Gateway (predict; docs at /docs)"] = gateway
    for name in upstreams:
        urls[name] = f"{gateway}/models/{name}/predict"
    return upstreams


def start_closed_loop(
    procs: Processes,
    args: argparse.Namespace,
    tracking: str,
    auth: ServerAuth,
    upstreams: dict[str, str],
    urls: dict[str, str],
) -> None:
    """The monitor, Prometheus where installed, and the orchestrator; adds their URLs to `urls`."""
    data_dir = Path(args.data_dir)
    control = control_token_file(data_dir / "control_token")
    proc = start_monitor(
        procs, tracking, args.monitor_port, auth.login("monitor"), control, args.monitoring_db_uri or ""
    )
    wait_http(f"http://127.0.0.1:{args.monitor_port}/health", proc, 60, "the monitor")
    for name, url in upstreams.items():
        urls[f"{name} (direct)"] = f"{url}/invocations"
    targets = {
        "mlflow": args.mlflow_port,
        "gateway": args.gateway_port,
        "monitor": args.monitor_port,
        "orchestrator": args.orchestrator_port,
    }
    prometheus = start_prometheus(procs, data_dir, targets, args.prometheus_port, auth.login("prometheus"))
    if prometheus:
        urls["Prometheus"] = prometheus
    if not args.monitoring_db_uri:
        log.info("no --monitoring-db-uri: no prediction log, so retrainings find no production data")
    proc = start_orchestrator(
        procs,
        tracking,
        args.orchestrator_port,
        args.monitoring_db_uri or "",
        prometheus or "",
        upstreams,
        auth.login("orchestrator"),
        control,
    )
    wait_http(f"http://127.0.0.1:{args.orchestrator_port}/health", proc, 60, "the orchestrator")
    urls[f"Orchestrator (POST /retrain; token in {control})"] = f"http://127.0.0.1:{args.orchestrator_port}"


@contextmanager
def platform(args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """Start everything; yield the URLs; stop everything on exit."""
    check_ports(args)
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    procs = Processes(log_dir=data_dir / "logs")
    backend = args.backend_store_uri or f"sqlite:///{(data_dir / 'mlflow.db').resolve()}"
    try:
        auth = generated_auth(
            args.auth_database_uri or f"sqlite:///{(data_dir / 'auth.db').resolve()}", data_dir / "auth.env"
        )
        tracking = start_mlflow(procs, backend, data_dir, args.mlflow_port, auth=auth)
        provision(auth, tracking, data_dir, Path(args.roster))
        urls = {"MLflow (logins in " + str(data_dir / "auth.env") + ")": tracking}
        if not args.no_train:
            code = run_trainer(
                tracking, ["--if-no-production", *args.train_args], login=auth.login("trainer")
            )
            if code != 0:
                raise RuntimeError(f"the trainer failed (exit {code})")
        upstreams = start_serving_path(procs, args, tracking, auth, urls)
        start_closed_loop(procs, args, tracking, auth, upstreams, urls)
        if shutil.which("grafana-server") is None and shutil.which("grafana") is None:
            log.info("grafana is not installed: skipping it (the Docker stack has it)")
        yield urls
    finally:
        procs.stop_all()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.local", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=".local", help="runs, artifacts and logs (default .local)")
    parser.add_argument("--backend-store-uri", help="default: SQLite in the data dir")
    parser.add_argument("--mlflow-port", type=int, default=5000)
    for model in MODELS:  # the model server of each registered model: --latency-port, --bandwidth-port, ...
        parser.add_argument(f"--{model.key}-port", type=int, default=model.port)
    parser.add_argument("--gateway-port", type=int, default=8000)
    parser.add_argument("--monitor-port", type=int, default=8001)
    parser.add_argument("--orchestrator-port", type=int, default=8002)
    parser.add_argument(
        "--monitoring-db-uri",
        help="a Postgres database for the prediction log (the closed loop's production data); default none",
    )
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument(
        "--auth-database-uri",
        help="the user store of MLflow's basic-auth app; default SQLite in the data dir",
    )
    parser.add_argument(
        "--roster", default="participants.txt", help="participants to create (one name a line)"
    )
    parser.add_argument("--no-train", action="store_true", help="do not run the trainer at start")
    parser.add_argument("train_args", nargs="*", help="extra trainer arguments (after --)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        with platform(args) as urls:
            print("\nThe platform runs locally (Ctrl-C stops it):")
            for label, url in urls.items():
                print(f"  {label:32} {url}")
            print("Try the curl examples of docs/workshop.md, 'Call the models'\n", flush=True)
            while not stop["now"]:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"local: error: {exc} (logs in {args.data_dir}/logs)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
