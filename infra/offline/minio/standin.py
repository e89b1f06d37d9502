"""Offline stand-in for the MinIO server image: moto's S3 server behind MinIO's contract.

Why: no MinIO image or binary can be fetched on the project's machines. moto (from the Python
package index) implements the S3 API that MLflow's proxied artifacts use (put/get, list_objects_v2,
multipart uploads). This wrapper adds what the stack expects from MinIO:

- the command line `server DIR --address :9000 --console-address :9001` (a leading `minio` is
  accepted too, like the official entrypoint);
- MINIO_ROOT_USER / MINIO_ROOT_PASSWORD are read and checked for MinIO's minimum lengths, but
  NOT enforced: moto accepts any credentials;
- /minio/health/live and /minio/health/ready on the API port, and a small page on the console
  port saying this is a stand-in;
- persistence: moto keeps objects in memory, so every successful write (PUT, POST, DELETE) is
  mirrored to DIR/.s3-standin/ before the client gets its answer, and DIR is loaded back at start.
  Persisted: buckets and the latest version of each object (bytes, ETag, metadata, checksum,
  last-modified). Not persisted: version history, bucket policies/versioning/lifecycle, tags, ACLs,
  unfinished multipart uploads.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import http.server
import json
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("s3-standin")

STATE_DIR_NAME = ".s3-standin"
PORT_FILE = Path("/tmp/s3-standin.port")  # read by the `mc` stand-in to find "local"
HEALTH_PATHS = {"/minio/health/live", "/minio/health/ready", "/minio/health/cluster"}
MUTATING_METHODS = {"PUT", "POST", "DELETE"}

CONSOLE_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>S3 stand-in (not MinIO)</title></head>
<body><h1>S3 stand-in console</h1>
<p>This is the offline stand-in for the MinIO image: moto's S3 server, built by
<code>infra/offline/build-images.sh</code>. There is no console here. Use the S3 API on the API port
(boto3, MLflow). Credentials are not enforced by this stand-in.</p></body></html>
"""


def parse_address(value: str) -> tuple[str, int]:
    """MinIO's ':9000' / 'host:9000' form -> (host, port); an empty host means all interfaces."""
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise argparse.ArgumentTypeError(f"invalid address {value!r}, expected [HOST]:PORT")
    return (host.strip("[]") or "0.0.0.0", int(port))


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Accept MinIO's `[minio] server DIR --address A --console-address C` command line."""
    if argv[:1] == ["minio"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="minio (s3 stand-in)")
    parser.add_argument("command", choices=["server"])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--address", type=parse_address, default=parse_address(":9000"))
    parser.add_argument("--console-address", type=parse_address, default=parse_address(":9001"))
    return parser.parse_args(argv)


def check_credentials() -> None:
    """Fail like MinIO on too-short root credentials; warn that they are not enforced."""
    user = os.environ.get("MINIO_ROOT_USER", "")
    password = os.environ.get("MINIO_ROOT_PASSWORD", "")
    if not user and not password:
        log.warning("MINIO_ROOT_USER/MINIO_ROOT_PASSWORD not set (MinIO would use minioadmin)")
    elif len(user) < 3 or len(password) < 8:
        sys.exit(
            "ERROR Unable to validate credentials: MINIO_ROOT_USER needs at least 3 characters "
            "and MINIO_ROOT_PASSWORD at least 8"
        )
    log.warning("credentials are NOT enforced by this stand-in (moto accepts any key)")


def safe_name(key: str) -> str:
    """File name for an object key: any key (slashes, '..', very long) maps to a flat name."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Write through a temporary file and rename, so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
    os.replace(tmp, path)


class Store:
    """Mirror of moto's in-memory S3 state in DATA/.s3-standin/buckets/<bucket>/.

    Each bucket directory holds bucket.json and objects/<sha256(key)>.{data,json}. `sync()`
    compares moto's current objects with what was last written (by object identity: moto creates
    a new key object on every write) and writes or deletes only the difference.
    """

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / STATE_DIR_NAME / "buckets"
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.buckets: dict[str, Path] = {}  # bucket name -> its directory
        self.objects: dict[tuple[str, str], Any] = {}  # (bucket, key) -> moto key last written

    @staticmethod
    def backends() -> Iterable[tuple[str, Any]]:
        """(account id, S3 backend) for every account moto has state for."""
        from moto.s3.models import s3_backends

        for account_id in list(s3_backends.keys()):
            for _partition, backend in list(s3_backends[account_id].items()):
                yield account_id, backend

    def restore(self) -> None:
        """Load every persisted bucket and object into moto."""
        from moto.s3.models import s3_backends

        n_objects = n_bytes = 0
        for bucket_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            info = json.loads((bucket_dir / "bucket.json").read_text())
            backend = s3_backends[info["account_id"]]["aws"]
            bucket = backend.create_bucket(info["name"], info["region"])
            self.buckets[bucket.name] = bucket_dir
            for meta_file in sorted((bucket_dir / "objects").glob("*.json")):
                meta = json.loads(meta_file.read_text())
                data_file = meta_file.with_suffix(".data")
                if not data_file.exists():
                    log.warning("skipping %s/%s: data file missing", bucket.name, meta["key"])
                    continue
                value = data_file.read_bytes()
                key = backend.put_object(
                    bucket.name,
                    meta["key"],
                    value,
                    etag=meta["etag"],
                    checksum_value=meta.get("checksum_value"),
                    disable_notification=True,
                )
                key.set_metadata(dict(meta["metadata"]))
                key.checksum_algorithm = meta.get("checksum_algorithm")
                key.checksum_type = meta.get("checksum_type")
                key.last_modified = datetime.datetime.fromisoformat(meta["last_modified"])
                self.objects[(bucket.name, meta["key"])] = key
                n_objects += 1
                n_bytes += len(value)
        log.info(
            "restored %d bucket(s), %d object(s), %.1f MB from %s",
            len(self.buckets),
            n_objects,
            n_bytes / 1e6,
            self.root,
        )

    def sync(self) -> None:
        """Write new/changed objects and buckets, delete removed ones."""
        from moto.s3.models import FakeKey

        with self.lock:
            seen_buckets: set[str] = set()
            seen_objects: set[tuple[str, str]] = set()
            for account_id, backend in self.backends():
                for bucket in list(backend.buckets.values()):
                    seen_buckets.add(bucket.name)
                    bucket_dir = self.buckets.get(bucket.name)
                    if bucket_dir is None:
                        bucket_dir = self._write_bucket(account_id, bucket)
                    for key_name, key in bucket.keys.items():
                        if not isinstance(key, FakeKey):  # delete marker: object is gone
                            continue
                        seen_objects.add((bucket.name, key_name))
                        if self.objects.get((bucket.name, key_name)) is not key:
                            self._write_object(bucket_dir, key)
                            self.objects[(bucket.name, key_name)] = key
            for bucket_name, key_name in set(self.objects) - seen_objects:
                del self.objects[(bucket_name, key_name)]
                if bucket_name in seen_buckets:
                    objects_dir = self.buckets[bucket_name] / "objects"
                    for suffix in (".json", ".data"):
                        (objects_dir / (safe_name(key_name) + suffix)).unlink(missing_ok=True)
            for bucket_name in set(self.buckets) - seen_buckets:
                shutil.rmtree(self.buckets.pop(bucket_name), ignore_errors=True)

    def _write_bucket(self, account_id: str, bucket: Any) -> Path:
        bucket_dir = self.root / bucket.name
        (bucket_dir / "objects").mkdir(parents=True, exist_ok=True)
        info = {"name": bucket.name, "region": bucket.region_name, "account_id": account_id}
        write_atomic(bucket_dir / "bucket.json", lambda f: f.write(json.dumps(info).encode()))
        self.buckets[bucket.name] = bucket_dir
        return bucket_dir

    @staticmethod
    def _write_object(bucket_dir: Path, key: Any) -> None:
        base = bucket_dir / "objects" / safe_name(key.name)

        def copy_value(handle: Any) -> None:
            with key.lock:  # moto's own lock around the key's spooled buffer
                key._value_buffer.seek(0)
                shutil.copyfileobj(key._value_buffer, handle, 1024 * 1024)

        write_atomic(base.with_suffix(".data"), copy_value)
        meta = {
            "key": key.name,
            "etag": key.etag.strip('"'),
            "metadata": dict(key.metadata),
            "last_modified": key.last_modified.isoformat(),
            "checksum_algorithm": key.checksum_algorithm,
            "checksum_value": key.checksum_value,
            "checksum_type": key.checksum_type,
        }
        write_atomic(base.with_suffix(".json"), lambda f: f.write(json.dumps(meta).encode()))


class StandinApp:
    """WSGI app: MinIO health paths, then moto; persists after every successful write."""

    def __init__(self, moto_app: Any, store: Store) -> None:
        self.moto_app = moto_app
        self.store = store

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ.get("REQUEST_METHOD", "GET")
        if environ.get("PATH_INFO", "") in HEALTH_PATHS and method in {"GET", "HEAD"}:
            start_response("200 OK", [("Content-Length", "0"), ("Server", "s3-standin")])
            return [b""]
        status: list[str] = []

        def capture(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status.append(code)
            return start_response(code, headers, exc_info)

        body = self.moto_app(environ, capture)
        # moto has applied the request once its app returns; persist before answering.
        if method in MUTATING_METHODS and status and status[-1][:1] in {"2", "3"}:
            try:
                self.store.sync()
            except Exception:
                log.exception("persisting to %s failed", self.store.root)
                raise
        return body


class ConsoleHandler(http.server.BaseHTTPRequestHandler):
    """The console port answers with one page saying this is the stand-in."""

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(CONSOLE_PAGE)))
        self.end_headers()
        self.wfile.write(CONSOLE_PAGE)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if os.environ.get("S3_STANDIN_ACCESS_LOG") != "1":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    args = parse_args(argv)
    import moto
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    log.warning(
        "STAND-IN for quay.io/minio/minio: moto %s S3 server, not MinIO (infra/offline/README.md)",
        moto.__version__,
    )
    check_credentials()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(args.data_dir)
    store.restore()

    app = StandinApp(DomainDispatcherApplication(create_backend_app), store)
    host, port = args.address
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    console = http.server.ThreadingHTTPServer(args.console_address, ConsoleHandler)
    threading.Thread(target=console.serve_forever, daemon=True).start()
    PORT_FILE.write_text(f"{port}\n")

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: finishing pending writes and stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "S3 API on %s:%d, console on %s:%d, data in %s", host, port, *args.console_address, args.data_dir
    )
    server.serve_forever()
    with store.lock:  # wait for a sync in progress to finish
        pass
    console.shutdown()
    PORT_FILE.unlink(missing_ok=True)
    log.info("stopped")


if __name__ == "__main__":
    main(sys.argv[1:])
