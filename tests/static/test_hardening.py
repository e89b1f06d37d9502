"""Every container of docker-compose.yml is hardened (docs/operations.md, "Team access and threat
model"): a non-root user, every capability dropped, no-new-privileges, a read-only root file system,
and memory, CPU and process limits. The few exceptions are listed below, each with its reason; a new
service without these settings fails here (the `x-hardened` anchor gives most of them)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

# (service, property) -> why that service may not have it. Keep this short.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("cadvisor", "user"): (
        "reads the host's cgroup files, /var/lib/docker and the root-owned Docker socket as root "
        "(without any capability, read-only, internal only)"
    ),
    ("chown-s3-data", "user"): (
        "one-shot: hands the S3 volume (possibly written by root) to the S3 store's non-root user"
    ),
}
# Capabilities a service may add back after `cap_drop: [ALL]`, with the reason.
ALLOWED_CAPABILITIES: dict[str, dict[str, str]] = {
    "chown-s3-data": {
        "CHOWN": "chown is its whole job",
        "DAC_READ_SEARCH": "walks directories of the volume that already belong to the S3 user",
    },
}
PROPERTIES = ("user", "cap_drop", "no-new-privileges", "read_only", "limits")
ROOT = {"", "0", "root"}


def limits(service: dict[str, Any]) -> dict[str, Any]:
    """Memory, CPU and process limits, from the service keys or `deploy.resources.limits`."""
    deployed = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    return {
        "memory": service.get("mem_limit") or deployed.get("memory"),
        "cpus": service.get("cpus") or deployed.get("cpus"),
        "pids": service.get("pids_limit") or deployed.get("pids"),
    }


def service_problems(name: str, service: dict[str, Any]) -> list[str]:
    """One line per hardening property `name` lacks (its exceptions aside)."""
    problems = []
    user = str(service.get("user") or "")
    if user.split(":")[0] in ROOT and (name, "user") not in EXCEPTIONS:
        problems.append(f"{name}: runs as root (user {user!r}): set a non-root `user`")
    if service.get("cap_drop") != ["ALL"]:
        problems.append(f"{name}: cap_drop is {service.get('cap_drop')!r}, not ['ALL']")
    extra = set(service.get("cap_add") or []) - set(ALLOWED_CAPABILITIES.get(name, {}))
    if extra:
        problems.append(f"{name}: adds capabilities {sorted(extra)} (ALLOWED_CAPABILITIES lists why any may)")
    options = service.get("security_opt") or []
    if not {"no-new-privileges:true", "no-new-privileges"} & set(options):
        problems.append(f"{name}: security_opt {options} lacks no-new-privileges:true")
    if service.get("read_only") is not True:
        problems.append(f"{name}: the root file system is writable: read_only: true (tmpfs for scratch)")
    for kind, value in limits(service).items():
        if not value or float(value) <= 0:
            problems.append(f"{name}: no {kind} limit (mem_limit, cpus, pids_limit)")
    if service.get("privileged") or service.get("pid") == "host" or service.get("ipc") == "host":
        problems.append(f"{name}: privileged or shares the host's PID/IPC namespace")
    return problems


def hardening_problems(services: dict[str, dict[str, Any]]) -> list[str]:
    """Every service's problems, plus exceptions for services that no longer exist."""
    problems = [p for name, service in sorted(services.items()) for p in service_problems(name, service)]
    stale = {name for name, _ in EXCEPTIONS} | set(ALLOWED_CAPABILITIES)
    problems += [
        f"exception for {name}, which is no service: remove it" for name in sorted(stale - set(services))
    ]
    return problems


def test_every_service_is_hardened(compose_config: dict) -> None:
    problems = hardening_problems(compose_config["services"])
    assert not problems, "\n".join(problems)


def test_the_loopback_override_keeps_the_hardening(loopback_config: dict) -> None:
    problems = hardening_problems(loopback_config["services"])
    assert not problems, "\n".join(problems)


def test_exceptions_are_few_and_explained() -> None:
    assert len(EXCEPTIONS) <= 3
    assert all(reason.strip() for reason in EXCEPTIONS.values())
    assert all(prop in PROPERTIES for _, prop in EXCEPTIONS)
    assert all(r.strip() for caps in ALLOWED_CAPABILITIES.values() for r in caps.values())


def test_a_new_service_without_hardening_fails(compose_config: dict) -> None:
    services = copy.deepcopy(compose_config["services"])
    services["newcomer"] = {"image": "example/newcomer:1.0.0", "restart": "unless-stopped"}
    problems = [p for p in hardening_problems(services) if p.startswith("newcomer:")]
    assert len(problems) == 7, problems  # root, cap_drop, no-new-privileges, read_only, 3 limits


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"user": None}, "runs as root"),
        ({"user": "0:0"}, "runs as root"),
        ({"user": "root"}, "runs as root"),
        ({"cap_drop": []}, "cap_drop"),
        ({"cap_add": ["NET_ADMIN"]}, "adds capabilities ['NET_ADMIN']"),
        ({"security_opt": []}, "no-new-privileges"),
        ({"read_only": False}, "writable"),
        ({"mem_limit": None}, "no memory limit"),
        ({"cpus": None}, "no cpus limit"),
        ({"pids_limit": None}, "no pids limit"),
        ({"pids_limit": -1}, "no pids limit"),
        ({"privileged": True}, "privileged"),
    ],
)
def test_the_check_fails_when_a_service_loses_a_setting(
    compose_config: dict, change: dict[str, Any], expected: str
) -> None:
    """A deliberately broken copy of the gateway's config (a service without exceptions)."""
    services = copy.deepcopy(compose_config["services"])
    assert not hardening_problems(services)
    services["gateway"].update(change)
    problems = hardening_problems(services)
    assert len(problems) == 1 and problems[0].startswith("gateway:") and expected in problems[0], problems


def test_exceptions_do_not_spread() -> None:
    """cadvisor may run as root, but only because it is named; a stale exception is reported."""
    rootful = {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"], "read_only": True}
    rootful |= {"mem_limit": 1, "cpus": 1, "pids_limit": 1}
    assert not service_problems("cadvisor", rootful)
    assert service_problems("cadvisor-2", rootful) == [
        "cadvisor-2: runs as root (user ''): set a non-root `user`"
    ]
    assert hardening_problems({}) == [
        "exception for cadvisor, which is no service: remove it",
        "exception for chown-s3-data, which is no service: remove it",
    ]


# --- the Docker socket (docs/closed-loop.md, "The Docker socket") ---------------------------------

DOCKER_SOCKET = "/var/run/docker.sock"
# Services that may see the socket, and why. Every such mount is read-only, which protects the file,
# not the API: the proxy's allow-list is what limits the orchestrator.
SOCKET_HOLDERS: dict[str, str] = {
    "docker-socket-proxy": "the orchestrator's filtered way to the Engine API",
    "cadvisor": "lists containers for their CPU and memory metrics (root, read-only mounts)",
}
PROXY_URL = "unix:///run/docker-api/docker.sock"
# The volume holding the proxy's socket: whoever mounts it may use the proxy.
PROXY_VOLUME, PROXY_USERS = "docker-api", {"docker-socket-proxy", "orchestrator"}


def socket_mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Bind mounts of `service` that expose the host's Docker socket (the file or a folder above)."""
    exposing = []
    for volume in service.get("volumes") or []:
        source = str(volume.get("source") or "").rstrip("/") or "/"
        if volume.get("type") == "bind" and (
            source == DOCKER_SOCKET or DOCKER_SOCKET.startswith(source + "/") or source == "/"
            or source in ("/run", "/run/docker.sock")
        ):  # fmt: skip
            exposing.append(volume)
    return exposing


def socket_problems(services: dict[str, dict[str, Any]]) -> list[str]:
    """Who sees the Docker socket and how; the orchestrator only through the proxy."""
    problems = []
    for name, service in sorted(services.items()):
        for volume in socket_mounts(service):
            if name not in SOCKET_HOLDERS:
                problems.append(f"{name}: mounts {volume['source']}, which holds the Docker socket")
            elif not volume.get("read_only"):
                problems.append(f"{name}: mounts {volume['source']} read-write")
        if name not in PROXY_USERS and any(
            v.get("type") == "volume" and v.get("source") == PROXY_VOLUME
            for v in service.get("volumes") or []
        ):
            problems.append(f"{name}: mounts the {PROXY_VOLUME} volume, the Docker socket proxy's")
    orchestrator = services.get("orchestrator", {})
    if (orchestrator.get("environment") or {}).get("DOCKER_HOST") != PROXY_URL:
        problems.append(f"orchestrator: DOCKER_HOST is not {PROXY_URL}")
    return problems


def test_only_the_proxy_and_cadvisor_see_the_docker_socket_and_read_only(
    compose_config: dict, loopback_config: dict
) -> None:
    for config in (compose_config, loopback_config):
        problems = socket_problems(config["services"])
        assert not problems, "\n".join(problems)
    assert socket_mounts(compose_config["services"]["docker-socket-proxy"])


@pytest.mark.parametrize(
    ("service", "volume", "expected"),
    [
        ("orchestrator", f"{DOCKER_SOCKET}:{DOCKER_SOCKET}", "orchestrator: mounts /var/run/docker.sock"),
        ("orchestrator", "/var/run:/host-run:ro", "orchestrator: mounts /var/run,"),
        ("gateway", "/:/rootfs:ro", "gateway: mounts /,"),
        (
            "docker-socket-proxy",
            f"{DOCKER_SOCKET}:{DOCKER_SOCKET}",
            "docker-socket-proxy: mounts /var/run/docker.sock read-write",
        ),
        ("cadvisor", "/var/run:/var/run", "cadvisor: mounts /var/run read-write"),
    ],
)
def test_the_socket_check_fails_on_a_new_mount(
    compose_config: dict, service: str, volume: str, expected: str
) -> None:
    """A broken copy of the stack: one more bind mount, in compose's resolved form."""
    services = copy.deepcopy(compose_config["services"])
    source, target, *mode = volume.split(":")
    services[service].setdefault("volumes", []).append(
        {"type": "bind", "source": source, "target": target, "read_only": mode == ["ro"]}
    )
    problems = socket_problems(services)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_the_orchestrator_without_the_proxy_fails_the_check(compose_config: dict) -> None:
    services = copy.deepcopy(compose_config["services"])
    del services["orchestrator"]["environment"]["DOCKER_HOST"]
    assert socket_problems(services) == [f"orchestrator: DOCKER_HOST is not {PROXY_URL}"]


def test_only_the_orchestrator_shares_the_proxy_socket(compose_config: dict) -> None:
    """The proxy's socket is open (mode 666) inside its volume: the volume is the access boundary, a
    tmpfs owned by the proxy's user with the orchestrator's group, mode 0770."""
    services = compose_config["services"]
    for name in PROXY_USERS:
        assert {"type": "volume", "source": PROXY_VOLUME, "target": "/run/docker-api"}.items() <= next(
            v for v in services[name]["volumes"] if v.get("source") == PROXY_VOLUME
        ).items(), name
    options = compose_config["volumes"][PROXY_VOLUME]["driver_opts"]
    assert options["type"] == "tmpfs" and {"uid=65534", "gid=1000", "mode=0770"} <= set(
        options["o"].split(",")
    )
    services = copy.deepcopy(services)
    services["serving-latency"].setdefault("volumes", []).append(
        {"type": "volume", "source": PROXY_VOLUME, "target": "/run/docker-api"}
    )
    assert socket_problems(services) == [
        f"serving-latency: mounts the {PROXY_VOLUME} volume, the Docker socket proxy's"
    ]
