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
