"""Read `docker compose config --format json` on stdin; fail unless every service stays on loopback.

Called by check-loopback.sh (see there for why) and by tests/static. Every service must use the
host's network, publish no port, map every compose service name to 127.0.0.1, and build (if compose
builds it) with the host's network; every long-running one must be told to listen on 127.0.0.1.
"""

import json
import sys

# How each long-running service is told to listen on 127.0.0.1 in compose.loopback.yml: an
# environment variable or a command-line argument. On the host's network a server on 0.0.0.0
# would be reachable from other machines. `make e2e` checks the real sockets
# (tests/stack/test_compose_stack.py).
LISTEN_SETTINGS: dict[str, list[tuple[str, str]]] = {
    "postgres": [("arg", "listen_addresses=127.0.0.1")],
    "minio": [("arg", "127.0.0.1:9000"), ("arg", "127.0.0.1:9001")],
    "mlflow": [("env", "MLFLOW_HOST=127.0.0.1")],
    "serving-latency": [("env", "SERVING_HOST=127.0.0.1")],
    "serving-bandwidth": [("env", "SERVING_HOST=127.0.0.1")],
    "gateway": [("env", "GATEWAY_HOST=127.0.0.1")],
    "gateway-listener": [("env", "LISTENER_SOCKETS=public=127.0.0.1:8000")],
    "monitor": [("env", "MONITOR_HOST=127.0.0.1")],
    "reports": [("env", "REPORTS_HOST=127.0.0.1")],
    "prometheus": [
        ("arg", "--web.listen-address=127.0.0.1:9090"),
        ("arg", "--config.file=/etc/prometheus-loopback/prometheus.yml"),  # the replicas' ports
    ],
    "alertmanager": [("arg", "--web.listen-address=127.0.0.1:9093")],
    "grafana": [("env", "GF_SERVER_HTTP_ADDR=127.0.0.1")],
    "cadvisor": [("arg", "--listen_ip=127.0.0.1")],
    "orchestrator": [("env", "ORCHESTRATOR_HOST=127.0.0.1")],
    "docker-socket-proxy": [("env", "DOCKER_PROXY_HEALTH=127.0.0.1:2375")],
}


def listen_problems(name: str, service: dict) -> list[str]:
    """Why a long-running service would not listen on 127.0.0.1 only (one-shot jobs listen on nothing)."""
    if service.get("restart", "no") == "no":
        return []
    if name not in LISTEN_SETTINGS:
        return [f"{name}: no 127.0.0.1 listen setting (add it to compose.loopback.yml and LISTEN_SETTINGS)"]
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    command = service.get("command") or []
    problems = []
    for kind, setting in LISTEN_SETTINGS[name]:
        key, _, value = setting.partition("=")
        if kind == "env" and environment.get(key) != value:
            problems.append(f"{name}: environment {key} is {environment.get(key)!r}, not {value!r}")
        elif kind == "arg" and setting not in command:
            problems.append(f"{name}: command {command} lacks {setting!r}")
    return problems


def loopback_problems(services: dict[str, dict]) -> list[str]:
    """One readable line per service setting that would leave loopback."""
    problems = []
    for name, service in sorted(services.items()):
        if service.get("network_mode") != "host":
            problems.append(f"{name}: network_mode is {service.get('network_mode')!r}, not 'host'")
        if service.get("ports"):
            problems.append(f"{name}: publishes ports {service['ports']}")
        hosts = service.get("extra_hosts") or []
        if isinstance(hosts, dict):
            hosts = [f"{host}={ip}" for host, ip in hosts.items()]
        mapped = {h.replace(":", "=", 1).split("=", 1)[0] for h in hosts if h.endswith("127.0.0.1")}
        if missing := sorted(set(services) - mapped):
            problems.append(f"{name}: extra_hosts does not map {missing} to 127.0.0.1")
        build = service.get("build")
        if build and build.get("network") != "host":
            problems.append(f"{name}: build.network is {build.get('network')!r}, not 'host'")
        problems += listen_problems(name, service)
    return problems


def main() -> int:
    services = json.load(sys.stdin)["services"]
    problems = loopback_problems(services)
    for problem in problems:
        print(f"check-loopback: {problem}", file=sys.stderr)
    if problems:
        print(
            "check-loopback: ERROR: list every service in infra/offline/compose.loopback.yml", file=sys.stderr
        )
        return 1
    listeners = sum(1 for service in services.values() if service.get("restart", "no") != "no")
    print(
        f"check-loopback: {len(services)} services on the host network, names on 127.0.0.1, no ports; "
        f"{listeners} long-running services listen on 127.0.0.1 only"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
