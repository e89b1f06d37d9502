"""Real pieces for driving the gateway without the whole platform.

- `ScoringServer`: a small HTTP server on 127.0.0.1 (a thread serving real sockets) that speaks
  MLflow's scoring protocol like `mlflow models serve`: GET /ping, POST /invocations with
  dataframe_records, dataframe_split, inputs (records or columns), instances or CSV, answered
  {"predictions": [...]}
  with a fixed formula of the features, or 400 {"error_code", "message", "stack_trace"} like MLflow.
  It records what it received, and can be told to fail, to take its time, or to raise on a row.
- `make_registry`: a real MLflow registry (SQLite store, local artifacts) where each model has a
  production version with a column signature of the feature schema and a reference profile.
- `running`: the gateway app in-process (Starlette's TestClient), in front of those.
- `Postgres`: a PostgreSQL cluster of its own on loopback that a test can stop and start again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import Model, infer_signature
from mlflow.tracking import MlflowClient
from starlette.testclient import TestClient

from contracts import drift, synthetic
from contracts.models import MODELS, PRODUCTION, format_upstreams
from contracts.schema import FEATURE_NAMES, NUMERIC_FEATURES
from services.gateway import Settings
from services.gateway.app import create_app
from services.gateway.scoring import ScoringFastPath
from services.local import Processes, postgres_bindir, start_postgres
from tests.conftest import free_port, require


def formula(row: dict[str, Any]) -> float:
    """The scoring server's 'model': a fixed function of the numeric features."""
    return round(sum(float(row[name]) * (i + 1) / 100 for i, name in enumerate(NUMERIC_FEATURES)), 6)


def rows_of(body: bytes, content_type: str) -> list[dict[str, Any]]:
    """The rows of a scoring request, as MLflow's scoring server reads them."""
    if content_type.split(";")[0].strip() == "text/csv":
        return list(csv.DictReader(io.StringIO(body.decode())))
    payload = json.loads(body)
    if isinstance(payload.get("inputs"), dict):  # columns: {name: [value per row]}, what the gateway sends
        columns = payload["inputs"]
        return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    for key in ("dataframe_records", "inputs", "instances"):
        if key in payload:
            return list(payload[key])
    split = payload["dataframe_split"]
    return [dict(zip(split["columns"], row, strict=True)) for row in split["data"]]


@dataclass
class ScoringServer:
    """An MLflow-protocol model server on a free loopback port."""

    received: list[tuple[str, bytes]] = field(default_factory=list)  # (content type, body)
    request_ids: list[str] = field(default_factory=list)  # each POST's X-Request-ID ("" if none)
    fail: tuple[int, bytes] | None = None  # answer every POST with this status and body
    delay_s: float = 0.0  # a slow model: every POST takes at least this long
    poison: float | None = None  # a row whose distance_km is this makes the model raise (400)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> ScoringServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like uvicorn

            def log_message(self, *args: Any) -> None:
                pass

            def answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path in ("/ping", "/health"):
                    self.answer(200, b"\n")
                else:
                    self.answer(404, b'{"message": "not found"}')

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                content_type = self.headers.get("Content-Type", "")
                owner.received.append((content_type, body))
                owner.request_ids.append(self.headers.get("X-Request-ID", ""))
                time.sleep(owner.delay_s)
                if self.path != "/invocations":
                    self.answer(404, b'{"message": "not found"}')
                elif owner.fail is not None:
                    self.answer(*owner.fail)
                else:
                    try:
                        rows = rows_of(body, content_type)
                        if owner.poison is not None and any(
                            float(row["distance_km"]) == owner.poison for row in rows
                        ):
                            raise ValueError(f"the model cannot take distance_km={owner.poison:g}")
                        predictions = [formula(row) for row in rows]
                    except (ValueError, KeyError, TypeError) as exc:
                        error = {
                            "error_code": "BAD_REQUEST",
                            "message": f"Failed to predict: {exc!r}",
                            "stack_trace": 'Traceback (most recent call last):\n  File "/srv/model.py"',
                        }
                        self.answer(400, json.dumps(error).encode())
                    else:
                        self.answer(200, json.dumps({"predictions": predictions}).encode())

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="scoring-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def forwarded(self) -> list[dict[str, Any]]:
        """The rows of the last request the server received."""
        content_type, body = self.received[-1]
        return rows_of(body, content_type)

    def calls(self, since: int = 0) -> list[list[dict[str, Any]]]:
        """The rows of each POST received after the first `since`."""
        return [rows_of(body, content_type) for content_type, body in self.received[since:]]


def scoring_server() -> Iterator[ScoringServer]:
    """A started ScoringServer, stopped afterwards (for pytest fixtures)."""
    server = ScoringServer().start()
    try:
        yield server
    finally:
        server.stop()


def make_registry(base: Path, seed: int = 1) -> str:
    """A SQLite tracking store under `base` where every registered model of contracts.models has a
    production version: a column signature of the schema and a reference profile built with
    `formula`'s predictions. Returns the tracking URI."""
    uri = f"sqlite:///{base / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment(
        "gateway-in-process", artifact_location=(base / "artifacts").as_uri()
    )
    frame = synthetic.generate(2000, seed=seed)[list(FEATURE_NAMES)]
    predictions = pd.Series([formula(row) for row in frame.to_dict(orient="records")])
    signature = infer_signature(frame, predictions.to_numpy())
    profile = drift.build_profile(frame, predictions)
    for registered in MODELS:
        run = client.create_run(experiment)
        run_id = run.info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            Model(artifact_path="model", run_id=run_id, signature=signature).save(str(Path(tmp) / "MLmodel"))
            client.log_artifacts(run_id, tmp, "model")
        client.log_dict(run_id, profile, drift.PROFILE_ARTIFACT)
        client.set_terminated(run_id)
        client.create_registered_model(registered.name)
        version = client.create_model_version(
            registered.name, f"{run.info.artifact_uri}/model", run_id=run_id
        )
        client.set_registered_model_alias(registered.name, PRODUCTION, version.version)
    return uri


def records(n: int, seed: int = 3, shift: float = 0.0) -> list[dict[str, Any]]:
    """`n` valid feature records from the seeded generator."""
    frame = synthetic.generate(n, seed=seed, drift=shift)
    return list(frame[list(FEATURE_NAMES)].to_dict(orient="records"))


@contextmanager
def tracking_uri_restored() -> Iterator[None]:
    """Undo what the gateway's registry poller does to this process: `mlflow.set_tracking_uri` sets
    the global tracking URI and the MLFLOW_TRACKING_URI variable (inherited by child processes)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None unsets both


@dataclass
class Gateway:
    """The gateway app running in-process, and a client for it."""

    client: TestClient
    app: ScoringFastPath

    def post(
        self, endpoint: str, payload: Any = None, model: str = "latency-predictor", **kwargs: Any
    ) -> Any:
        if payload is not None:
            kwargs["json"] = payload
        return self.client.post(f"/models/{model}/{endpoint}", **kwargs)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.app.scoring.metrics.registry.get_sample_value(name, labels)


@contextmanager
def running(registry: str, models: dict[str, str], loaded: list[str], **env: str) -> Iterator[Gateway]:
    """The gateway app for `models` (name -> upstream URL), started in-process; waits until the
    `loaded` models have their production version. Its client may be used from several threads at
    once (the requests then run concurrently in the app's event loop)."""
    settings = Settings.from_env(
        dict(
            GATEWAY_MODELS=format_upstreams(models),
            MLFLOW_TRACKING_URI=registry,
            GATEWAY_REFRESH_S="0.2",
            **env,
        )
    )
    app = create_app(settings)
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 30
        while not all(app.scoring.models[name].current for name in loaded):
            assert time.monotonic() < deadline, "the gateway did not load its models"
            time.sleep(0.05)
        yield Gateway(client, app)


class Postgres:
    """A throwaway PostgreSQL cluster (trust auth, 127.0.0.1, a free port) that can be stopped (a
    fast shutdown: connections are closed, new ones refused) and started again with its data."""

    def __init__(self, base: Path) -> None:
        require("PostgreSQL server (Debian package postgresql)", postgres_bindir())
        self.procs = Processes(log_dir=base / "logs")
        self.port = free_port()
        uri = start_postgres(self.procs, base / "cluster", self.port)
        self.dsn = uri.replace("+psycopg2", "")
        self._cmd = list(self.procs.children[-1][1].args)  # type: ignore[arg-type]
        self._starts = 1

    def stop(self) -> None:
        _, proc = self.procs.children.pop()
        os.killpg(proc.pid, signal.SIGINT)  # PostgreSQL's fast shutdown: clients are disconnected
        proc.wait(timeout=30)

    def start(self) -> None:
        if self.procs.children and self.procs.children[-1][1].poll() is None:
            return
        self._starts += 1
        self.procs.start(f"postgres-{self._starts}", self._cmd)
        bindir = postgres_bindir()
        deadline = time.monotonic() + 30
        while subprocess.run(
            [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
        ).returncode:
            assert time.monotonic() < deadline, "PostgreSQL did not start again"
            time.sleep(0.1)
