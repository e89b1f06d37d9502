"""Read `docker compose config --format json` on stdin; fail unless every service stays on loopback.

Called by check-loopback.sh (see there for why). Every service must use the host's network, publish
no port, map every compose service name to 127.0.0.1, and build (if compose builds it) with the
host's network.
"""

import json
import sys


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
    print(f"check-loopback: {len(services)} services on the host network, names on 127.0.0.1, no ports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
