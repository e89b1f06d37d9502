"""docker-compose.yml and the Dockerfiles follow the contracts in docs/architecture.md."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Exact versions: x.y.z (optionally v-prefixed, with a suffix like -slim-bookworm) or a MinIO release.
PINNED_TAG = re.compile(r"^v?\d+\.\d+\.\d+([.-][\w.-]+)?$|^RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ$")
# Images whose upstream releases have only two numbers: postgres 15.14 is an exact release.
TWO_NUMBER_RELEASES = {"postgres"}
TWO_NUMBER_TAG = re.compile(r"^\d+\.\d+([.-][\w.-]+)?$")
# Repositories that no longer exist on Docker Hub (FACTS.md): pulls fail.
DELETED_REPOS = ("minio/minio", "minio/mc")
DELETED_NAMESPACES = ("bitnami",)
# Only UIs and prediction endpoints publish ports.
PUBLISHERS = {"mlflow", "minio", "prometheus", "grafana", "gateway", "alertmanager"}


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


def test_images_pinned_and_pullable(compose, compose_config: dict) -> None:
    version = compose.dummy_env()["PLATFORM_VERSION"]
    problems = []
    for name, service in compose_config["services"].items():
        image = service.get("image", "")
        if image.startswith("mlops/"):
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


def test_ports_bind_to_configurable_address(compose, compose_config: dict) -> None:
    custom = compose.resolve({**compose.dummy_env(), "BIND_ADDRESS": "192.0.2.10"})
    for config, address in ((compose_config, "127.0.0.1"), (custom, "192.0.2.10")):
        for name, service in config["services"].items():
            for port in service.get("ports", []):
                assert port.get("host_ip") == address, f"{name} publishes {port} beyond BIND_ADDRESS"


def test_only_uis_and_prediction_services_publish(compose_config: dict) -> None:
    publishing = {name for name, s in compose_config["services"].items() if s.get("ports")}
    assert "postgres" not in publishing
    unexpected = {n for n in publishing if n not in PUBLISHERS and not n.startswith("serving-")}
    assert not unexpected, f"internal services publish ports: {sorted(unexpected)}"


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
