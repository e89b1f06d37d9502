"""`.env.example`, generated from the settings classes: `make env-example` (the venv's python).

Every line of the stack's `.env` is a setting declared once, with its default and its description, in
a settings class: the services' own (services/*/settings.py, trainer/config.py, contracts/) or, for
what only docker-compose.yml and the third-party images read (ports, memory limits, the servers'
logins), the classes below. SECTIONS only chooses which variables `.env` holds and in what order.

Secrets are `<change-me>` here (refused by `make up`); `make env` (infra/stack.py,
standard library only, so that it runs before any venv exists) writes `.env` from this file with
random secrets and this machine's values. A static test fails when the file is out of date
(tests/static/test_env_example.py).

    python infra/env_example.py          # write .env.example
    python infra/env_example.py --check  # exit 1 when it is out of date
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contracts.settings import SECRET_PLACEHOLDER, EnvSettings, S3Settings, env_fields  # noqa: E402
from services.backup.settings import Settings as Backup  # noqa: E402
from services.dbinit.settings import Settings as Dbinit  # noqa: E402
from services.gateway.settings import Settings as Gateway  # noqa: E402
from services.monitor.settings import Settings as Monitor  # noqa: E402
from services.orchestrator.settings import Settings as Orchestrator  # noqa: E402
from services.reports.settings import Settings as Reports  # noqa: E402
from services.s3init.settings import Settings as S3init  # noqa: E402
from services.serving.settings import Settings as Serving  # noqa: E402
from trainer.config import Settings as Trainer  # noqa: E402

EXAMPLE = ROOT / ".env.example"
# Part of a generated name; `make env` replaces it with random hex digits.
RANDOM_HEX = "<hex>"
HEADER = """\
# Settings for the MLOps platform (docker compose reads .env). `make env` writes .env from this file,
# with random secrets: secrets here are placeholders that nothing accepts.
# Generated from the settings classes by `make env-example` (infra/env_example.py): do not edit.
"""
WIDTH = 100


def secret(description: str) -> FieldInfo:
    """A secret: random in `.env`, a placeholder here."""
    return Field(SECRET_PLACEHOLDER, description=description)  # type: ignore[no-any-return]


class Stack(EnvSettings):
    """Settings of the whole stack, named without a prefix."""

    model_config = SettingsConfigDict(env_prefix="")

    platform_version: str = Field(
        "0.1.0",
        description="tag of the images we build ourselves (mlops/mlflow, mlops/trainer, mlops/serving)",
    )
    bind_address: str = Field(
        "127.0.0.1",
        description="address published ports bind to. 127.0.0.1 keeps the platform private to this machine; "
        "0.0.0.0 shares it with your network (then also set MLFLOW_EXTRA_ALLOWED_HOSTS)",
    )
    control_token: str = secret(
        "token the orchestrator's /retrain, /rollback and /alerts and the monitor's /alerts require "
        "(Authorization: Bearer). make up writes it to .secrets/ for the services and Alertmanager"
    )
    docker_gid: str = Field(
        "0",
        description="group of the Docker socket: the docker-socket-proxy (non-root) reaches it with this "
        "group; the orchestrator starts retraining containers through that proxy. `make env` finds it",
    )


class PostgresServer(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="POSTGRES_")

    user: str = Field(
        "mlflow",
        description="the Postgres superuser: bootstrap (the create-databases job) and backups only "
        "(docs/operations.md, 'Database roles'). Not one of the service roles' names (mlflow_server, "
        "gateway, monitor, orchestrator, grafana)",
    )
    password: str = secret("its password")


class S3Server(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="S3_")

    image: str = Field(
        "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z",
        description="S3 store image. MinIO's Docker Hub images are gone; this quay.io tag is the last MinIO "
        "release. Any S3-compatible image that takes `server /data --address :9000 --console-address :9001` "
        "and MINIO_ROOT_USER/MINIO_ROOT_PASSWORD works (e.g. a community MinIO build). For SeaweedFS instead "
        "(maintained): the variant infra/compose.seaweedfs.yml (docs/operations.md, 'The S3 store')",
    )
    api_port: int = Field(9000, description="host port of the S3 API")
    console_port: int = Field(9001, description="host port of the S3 console")
    access_key: str = Field(
        f"mlops-{RANDOM_HEX}",
        description="root access key of the S3 store (MinIO console login). Only the MLflow server uses the "
        "credentials: clients upload and download artifacts through the server",
    )
    secret_key: str = secret("root secret key of the S3 store")
    memory: str = Field(
        "2g",
        description="memory limit of the S3 store's container (objects live on the s3-data volume, not in "
        "memory; the offline stand-in, SeaweedFS, uses about 200 MiB idle plus page cache)",
    )


class GrafanaServer(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="GRAFANA_")

    port: int = Field(3000, description="host port of Grafana")
    admin_user: str = Field("admin", description="Grafana admin login")
    admin_password: str = secret("Grafana admin password")
    viewer_user: str = Field(
        "viewer",
        description="Grafana's read-only login for participants (dashboards only; the create-grafana-viewer "
        "job applies the password at every start)",
    )
    viewer_password: str = secret("its password")


class MlflowServer(EnvSettings):
    """The MLflow server and its users (docs/operations.md, 'Team access and threat model')."""

    model_config = SettingsConfigDict(env_prefix="MLFLOW_")

    port: int = Field(5000, description="host port of the MLflow UI and API")
    extra_allowed_hosts: str = Field(
        "localhost",
        description="extra Host headers the MLflow server accepts, comma-separated, e.g. myhost:5000",
    )
    workers: int = Field(2, description="server worker processes (each ~300 MB); 2 suits a laptop")
    memory: str = Field(
        "2g",
        description="memory limit of the MLflow server container (about 650 MiB idle with 2 workers); raise "
        "it with the workers",
    )
    auth_admin_password: str = secret(
        "password of MLflow's `admin` user (UI login, `make participant`). Applied when the user store is "
        "first created; to change it later use MLflow's update-password API, then edit it here"
    )
    flask_server_secret_key: str = secret("signs MLflow's login sessions and CSRF tokens")
    trainer_password: str = secret(
        "service accounts' MLflow passwords (the create-accounts job applies them at every start). The "
        "trainer: first training and `make train` without NAME"
    )
    serving_password: str = secret("the serving launchers")
    gateway_password: str = secret("the prediction gateway")
    monitor_password: str = secret("the monitor")
    reports_password: str = secret("the reports service (reads only)")
    orchestrator_password: str = secret("the orchestrator and the trainer containers it starts")
    prometheus_password: str = secret(
        "Prometheus scraping MLflow's /metrics (MLflow requires an admin there; this one only scrapes)"
    )


class ServingContainers(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="SERVING_")

    latency_port: int = Field(
        5001,
        description="host port of the latency model's server, published only with the debug override "
        "infra/debug/compose.serving-ports.yml (clients use the gateway)",
    )
    bandwidth_port: int = Field(
        5002, description="host port of the bandwidth-efficiency model's server (debug)"
    )
    memory: str = Field(
        "1536m",
        description="memory limit of each model server's container (its workers, and two versions during a "
        "rollout)",
    )


class PrometheusServer(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="PROMETHEUS_")

    port: int = Field(9090, description="host port of Prometheus")
    retention: str = Field("15d", description="how long metric history is kept")


class AlertmanagerServer(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="ALERTMANAGER_")

    port: int = Field(9093, description="host port of Alertmanager")


# Where a variable's declaration is looked up, first match wins: the stack's own classes, then the
# services'. PLATFORM_VERSION is the trainer's too (outside a container it tags runs `dev`).
DECLARING = (
    Stack, PostgresServer, S3Server, GrafanaServer, MlflowServer, ServingContainers, PrometheusServer,
    AlertmanagerServer, S3Settings, Gateway, Reports, Monitor, Orchestrator, Serving, Trainer, Dbinit, Backup,
    S3init,
)  # fmt: skip

# What `.env` holds, in this order: (section title, variables).
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Versions", ("PLATFORM_VERSION", "S3_IMAGE")),
    ("Network", (
        "BIND_ADDRESS", "MLFLOW_PORT", "GRAFANA_PORT", "PROMETHEUS_PORT", "S3_API_PORT", "S3_CONSOLE_PORT",
        "GATEWAY_PORT", "ALERTMANAGER_PORT", "REPORTS_PORT", "SERVING_LATENCY_PORT", "SERVING_BANDWIDTH_PORT",
        "MLFLOW_EXTRA_ALLOWED_HOSTS",
    )),
    ("Postgres (MLflow's backend store, the prediction log)", (
        "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_MLFLOW_PASSWORD", "POSTGRES_GATEWAY_PASSWORD",
        "POSTGRES_MONITOR_PASSWORD", "POSTGRES_ORCHESTRATOR_PASSWORD", "POSTGRES_GRAFANA_PASSWORD",
    )),
    ("S3 artifact store", ("S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_BUCKET", "S3_MEMORY")),
    ("Grafana", (
        "GRAFANA_ADMIN_USER", "GRAFANA_ADMIN_PASSWORD", "GRAFANA_VIEWER_USER", "GRAFANA_VIEWER_PASSWORD",
    )),
    ("MLflow authentication (docs/operations.md, 'Team access and threat model')", (
        "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_TRAINER_PASSWORD",
        "MLFLOW_SERVING_PASSWORD", "MLFLOW_GATEWAY_PASSWORD", "MLFLOW_MONITOR_PASSWORD",
        "MLFLOW_REPORTS_PASSWORD", "MLFLOW_ORCHESTRATOR_PASSWORD", "MLFLOW_PROMETHEUS_PASSWORD",
    )),
    ("Control endpoints (docs/operations.md, 'Control endpoints and secrets')", (
        "CONTROL_TOKEN", "EXTRA_ALLOWED_HOSTS",
    )),
    ("MLflow", ("MLFLOW_WORKERS", "MLFLOW_MEMORY", "PARTICIPANT")),
    ("Gateway API keys (docs/operations.md, 'Team access and threat model')", (
        "GATEWAY_REQUIRE_API_KEYS", "GATEWAY_API_KEYS",
    )),
    ("Serving", ("SERVING_WORKERS", "SERVING_MEMORY")),
    ("Closed loop (docs/closed-loop.md)", (
        "DOCKER_GID", "RETRAIN_SCHEDULE", "RETRAIN_COOLDOWN_S", "RETRAIN_WINDOW_S", "RETRAIN_MIN_ROWS",
        "RETRAIN_REFERENCE_ROWS", "GATE_MIN_RELATIVE_IMPROVEMENT", "GATE_MAX_TEST_REGRESSION",
        "GATE_MAX_REFERENCE_REGRESSION", "WATCH_S", "TRAINER_MEMORY", "TRAINER_CPUS", "TRAINER_PIDS",
    )),
    ("Prometheus", ("PROMETHEUS_RETENTION",)),
)  # fmt: skip


def declarations(classes: tuple[type[BaseSettings], ...] = DECLARING) -> dict[str, FieldInfo]:
    """Variable name -> its field, the first class declaring it winning."""
    found: dict[str, FieldInfo] = {}
    for cls in classes:
        for name, field in env_fields(cls):
            found.setdefault(name, field)
    return found


def example_value(field: FieldInfo) -> str:
    """The value `.env.example` shows: the field's `example` when it has one (a default computed on
    this machine), else its default, as the environment spells it."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    value = extra.get("example", field.get_default(call_default_factory=False))
    if value is PydanticUndefined:
        raise ValueError("a required setting needs an `example` for .env.example")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


def comment(text: str) -> list[str]:
    """A description as comment lines, its first letter upper case and a full stop at the end."""
    text = text[:1].upper() + text[1:]
    text = text if text.endswith(".") else f"{text}."
    return textwrap.wrap(text, WIDTH - 2, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)


def render() -> str:
    """The text of `.env.example`."""
    fields = declarations()
    lines = HEADER.splitlines()
    for title, names in SECTIONS:
        lines += ["", f"# --- {title} " + "-" * max(3, WIDTH - 7 - len(title))]
        for name in names:
            if name not in fields:
                raise KeyError(f"{name}: no settings class declares it (infra/env_example.py, DECLARING)")
            field = fields[name]
            if not field.description:
                raise ValueError(f"{name}: its field has no description, which .env.example shows")
            lines += [*comment(field.description), f"{name}={example_value(field)}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if EXAMPLE.read_text() != text:
            print(
                ".env.example is out of date with the settings classes: run `make env-example`",
                file=sys.stderr,
            )
            return 1
        return 0
    EXAMPLE.write_text(text)
    print(f"wrote {EXAMPLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
