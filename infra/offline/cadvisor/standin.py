#!/usr/bin/env python3
"""Offline stand-in for cAdvisor (gcr.io/cadvisor/cadvisor:v0.49.1): NOT cAdvisor.

Serves, on cAdvisor's port and paths, the few container metrics this platform uses, with cAdvisor's
names, labels and units:

    container_cpu_usage_seconds_total{cpu="total",id,image,name,<label>}   counter, seconds
    container_memory_usage_bytes{id,image,name,<label>}                    gauge, bytes
    container_memory_working_set_bytes{id,image,name,<label>}              gauge, usage - inactive file
    container_last_seen{id,image,name,<label>}                             gauge, unix seconds

for the root cgroup (id="/", empty name) and every running Docker container, plus
cadvisor_version_info and container_scrape_error. `<label>` is container_label_<docker label> for
all labels, or only those of --whitelisted_container_labels when --store_container_labels=false.
GET /healthz answers "ok".

Values are read at scrape time (not on a housekeeping loop) from the cgroup filesystem under
/sys/fs/cgroup (the host's /sys mounted read-only): cgroup v1 cpuacct.usage, memory.usage_in_bytes,
memory.stat total_inactive_file; cgroup v2 cpu.stat usage_usec, memory.current, memory.stat
inactive_file. Container names, images and labels come from the Docker Engine API
(GET /containers/json) over the unix socket of --docker. Standard library only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERSION = "v0.49.1"
CGROUP_ROOT = os.environ.get("CADVISOR_STANDIN_CGROUP_ROOT", "/sys/fs/cgroup")
log = logging.getLogger("cadvisor-standin")

# cAdvisor's flags (Go `flag` syntax: -name=value, --name=value, -name value; booleans may omit the
# value). Implemented here: the first group. Accepted and ignored: the second, real v0.49 flags
# whose effect the stand-in does not need. Anything else stops the program like cAdvisor does.
DEFAULTS: dict[str, str] = {
    "port": "8080",
    "listen_ip": "",
    "docker": "unix:///var/run/docker.sock",
    "docker_only": "false",
    "store_container_labels": "true",
    "whitelisted_container_labels": "",
    "prometheus_endpoint": "/metrics",
    "disable_root_cgroup_stats": "false",
    "version": "false",
}
IGNORED = {
    "housekeeping_interval", "global_housekeeping_interval", "allow_dynamic_housekeeping",
    "max_housekeeping_interval", "storage_duration", "disable_metrics", "enable_metrics",
    "raw_cgroup_prefix_whitelist", "env_metadata_whitelist", "max_procs", "profiling",
    "logtostderr", "alsologtostderr", "v", "log_dir", "stderrthreshold", "event_storage_age_limit",
    "event_storage_event_limit", "application_metrics_count_limit", "log_cadvisor_usage",
    "url_base_prefix", "machine_id_file", "boot_id_file", "docker_root", "containerd",
    "podman", "mesos_agent", "enable_load_reader", "update_machine_info_interval",
}  # fmt: skip
BOOLEANS = {"docker_only", "store_container_labels", "disable_root_cgroup_stats", "version",
            "allow_dynamic_housekeeping", "profiling", "logtostderr", "alsologtostderr",
            "log_cadvisor_usage", "enable_load_reader"}  # fmt: skip


class FlagError(ValueError):
    pass


def parse_flags(argv: list[str]) -> dict[str, str]:
    """Parse cAdvisor's command line (Go flag syntax) into DEFAULTS plus the given values."""
    flags = dict(DEFAULTS)
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--" or not arg.startswith("-") or arg == "-":
            raise FlagError(f"unexpected argument {arg!r}")
        name, has_value, value = arg.lstrip("-").partition("=")
        if name not in DEFAULTS and name not in IGNORED:
            raise FlagError(f"flag provided but not defined: -{name}")
        if not has_value:
            if name in BOOLEANS:
                value = "true"
            elif args:
                value = args.pop(0)
            else:
                raise FlagError(f"flag needs an argument: -{name}")
        if name in BOOLEANS and value.lower() not in ("true", "false", "1", "0", "t", "f"):
            raise FlagError(f'invalid boolean value "{value}" for -{name}')
        if name in DEFAULTS:
            flags[name] = value
    return flags


def is_true(value: str) -> bool:
    return value.lower() in ("true", "1", "t")


# --- Docker Engine API over a unix socket -----------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def docker_get(endpoint: str, path: str) -> Any:
    parsed = urllib.parse.urlparse(endpoint)
    if parsed.scheme != "unix":
        raise RuntimeError(f"only unix:// Docker endpoints are supported, got {endpoint}")
    conn = UnixHTTPConnection(parsed.path)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"Docker API {path}: HTTP {response.status} {body[:200]!r}")
        return json.loads(body)
    finally:
        conn.close()


# --- cgroup readers ---------------------------------------------------------------------------


def read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().split()[0])


def read_stat(path: str) -> dict[str, int]:
    out = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                out[key] = int(value)
    return out


@dataclass
class Usage:
    cpu_seconds: float
    memory_bytes: int
    working_set_bytes: int


class Cgroups:
    """Finds a container's cgroup and reads its CPU and memory usage (v1 or v2)."""

    def __init__(self, root: str = CGROUP_ROOT) -> None:
        self.root = root
        self.v2 = os.path.exists(os.path.join(root, "cgroup.controllers"))
        self._paths: dict[str, str] = {}

    def _base(self, controller: str) -> str:
        return self.root if self.v2 else os.path.join(self.root, controller)

    def find(self, container_id: str) -> str | None:
        """The cgroup path of a container, relative to the hierarchy root ("/docker/<id>")."""
        if container_id in self._paths:
            return self._paths[container_id]
        base = self._base("memory")
        candidates = [f"/docker/{container_id}", f"/system.slice/docker-{container_id}.scope"]
        found = next((c for c in candidates if os.path.isdir(base + c)), None)
        if found is None:  # custom cgroup parents: a bounded search for a directory naming the id
            for dirpath, dirnames, _ in os.walk(base):
                if dirpath.count(os.sep) - base.count(os.sep) >= 4:
                    dirnames.clear()
                    continue
                match = next((d for d in dirnames if container_id in d), None)
                if match:
                    found = os.path.join(dirpath, match)[len(base) :]
                    break
        if found is not None:
            self._paths[container_id] = found
        return found

    def forget(self, live_ids: set[str]) -> None:
        for gone in set(self._paths) - live_ids:
            del self._paths[gone]

    def usage(self, cgroup: str) -> Usage:
        rel = cgroup.strip("/")
        if self.v2:
            path = os.path.join(self.root, rel)
            cpu = read_stat(os.path.join(path, "cpu.stat"))["usage_usec"] / 1e6
            stat = read_stat(os.path.join(path, "memory.stat"))
            # the v2 root has no memory.current: take what /proc/meminfo counts as used
            memory = read_int(os.path.join(path, "memory.current")) if rel else host_memory_used()
            inactive = stat.get("inactive_file", 0)
        else:
            cpu = read_int(os.path.join(self.root, "cpuacct", rel, "cpuacct.usage")) / 1e9
            memory_dir = os.path.join(self.root, "memory", rel)
            memory = read_int(os.path.join(memory_dir, "memory.usage_in_bytes"))
            inactive = read_stat(os.path.join(memory_dir, "memory.stat")).get("total_inactive_file", 0)
        return Usage(cpu, memory, max(memory - inactive, 0))


def host_memory_used() -> int:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
    return info["MemTotal"] - info["MemFree"]


# --- exposition -------------------------------------------------------------------------------

LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
METRICS = (
    ("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed in seconds."),
    ("container_memory_usage_bytes", "gauge", "Current memory usage in bytes, including all memory "
     "regardless of when it was accessed"),
    ("container_memory_working_set_bytes", "gauge", "Current working set in bytes."),
    ("container_last_seen", "gauge", "Last time a container was seen by the exporter"),
)  # fmt: skip


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in sorted(labels.items())) + "}"


@dataclass
class Exporter:
    flags: dict[str, str]
    cgroups: Cgroups = field(default_factory=Cgroups)
    lock: threading.Lock = field(default_factory=threading.Lock)
    unmatched: set[str] = field(default_factory=set)  # containers already warned about

    def container_labels(self, docker_labels: dict[str, str]) -> dict[str, str]:
        if is_true(self.flags["store_container_labels"]):
            keys = list(docker_labels)
        else:
            keys = [k for k in self.flags["whitelisted_container_labels"].split(",") if k]
        return {
            "container_label_" + LABEL_CHARS.sub("_", k): docker_labels[k] for k in keys if k in docker_labels
        }

    def collect(self) -> tuple[list[tuple[dict[str, str], Usage]], bool]:
        """(labels, usage) of the root cgroup and every running container; True if something failed."""
        series: list[tuple[dict[str, str], Usage]] = []
        failed = False
        if not is_true(self.flags["disable_root_cgroup_stats"]):
            try:
                series.append(({"id": "/", "image": "", "name": ""}, self.cgroups.usage("/")))
            except (OSError, KeyError, ValueError) as exc:
                log.warning("root cgroup: %s", exc)
                failed = True
        try:
            containers = docker_get(self.flags["docker"], "/containers/json")
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("Docker API: %s", exc)
            return series, True
        with self.lock:
            self.cgroups.forget({c["Id"] for c in containers})
            for container in containers:
                cgroup = self.cgroups.find(container["Id"])
                if cgroup is None:
                    if container["Id"] not in self.unmatched:
                        self.unmatched.add(container["Id"])
                        log.warning("no cgroup found for container %s", container["Id"][:12])
                    failed = True
                    continue
                try:
                    usage = self.cgroups.usage(cgroup)
                except (OSError, KeyError, ValueError) as exc:  # the container stopped meanwhile
                    log.info("container %s: %s", container["Id"][:12], exc)
                    continue
                names = container.get("Names") or [""]
                labels = {"id": cgroup, "image": container.get("Image", ""), "name": names[0].lstrip("/")}
                labels.update(self.container_labels(container.get("Labels") or {}))
                series.append((labels, usage))
        return series, failed

    def render(self) -> str:
        series, failed = self.collect()
        # cAdvisor gives every series of a metric the same label names (empty when not set).
        extra = sorted({k for labels, _ in series for k in labels if k.startswith("container_label_")})
        for labels, _ in series:
            for key in extra:
                labels.setdefault(key, "")
        now = int(time.time())
        lines = [
            "# HELP cadvisor_version_info A metric with a constant '1' value labeled by kernel version, "
            "OS version, docker version, cadvisor version & cadvisor revision.",
            "# TYPE cadvisor_version_info gauge",
            f'cadvisor_version_info{{cadvisorRevision="offline-standin",cadvisorVersion="{VERSION}",'
            f'kernelVersion="{escape(os.uname().release)}"}} 1',
        ]
        for name, kind, help_text in METRICS:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for labels, usage in series:
                if name == "container_cpu_usage_seconds_total":
                    lines.append(f"{name}{format_labels({**labels, 'cpu': 'total'})} {usage.cpu_seconds!r}")
                elif name == "container_memory_usage_bytes":
                    lines.append(f"{name}{format_labels(labels)} {usage.memory_bytes}")
                elif name == "container_memory_working_set_bytes":
                    lines.append(f"{name}{format_labels(labels)} {usage.working_set_bytes}")
                else:
                    lines.append(f"{name}{format_labels(labels)} {now}")
        lines += [
            "# HELP container_scrape_error 1 if there was an error while getting container metrics, "
            "0 otherwise",
            "# TYPE container_scrape_error gauge",
            f"container_scrape_error {int(failed)}",
        ]
        return "\n".join(lines) + "\n"


def make_handler(exporter: Exporter) -> type[BaseHTTPRequestHandler]:
    metrics_path = exporter.flags["prometheus_endpoint"]

    class Handler(BaseHTTPRequestHandler):
        server_version = f"cadvisor-standin/{VERSION}"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = urllib.parse.urlparse(self.path).path
            if path == "/healthz":
                self.reply(200, "ok", "text/plain; charset=utf-8")
            elif path == metrics_path:
                self.reply(200, exporter.render(), "text/plain; version=0.0.4; charset=utf-8")
            elif path in ("/", "/containers/"):
                self.reply(
                    200, f"cAdvisor offline stand-in {VERSION}: {metrics_path}, /healthz\n", "text/plain"
                )
            else:
                self.reply(404, "404 page not found\n", "text/plain; charset=utf-8")

        def reply(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            pass  # scrapes every few seconds: no access log, like cAdvisor

    return Handler


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s cadvisor-standin %(levelname)s %(message)s")
    try:
        flags = parse_flags(argv)
    except FlagError as exc:
        print(exc, file=sys.stderr)
        return 2
    if is_true(flags["version"]):
        print(f"cAdvisor version {VERSION} (offline stand-in)")
        return 0
    exporter = Exporter(flags)
    mode = "v2" if exporter.cgroups.v2 else "v1"
    server = ThreadingHTTPServer((flags["listen_ip"], int(flags["port"])), make_handler(exporter))
    server.daemon_threads = True
    log.info(
        "offline stand-in for cAdvisor %s: cgroup %s under %s, Docker at %s, listening on %s:%s",
        VERSION, mode, exporter.cgroups.root, flags["docker"], flags["listen_ip"] or "*", flags["port"],
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main(sys.argv[1:]))
