"""The prediction gateway in front of real model servers, a real registry and a real Postgres.

Every component is a real process on loopback: PostgreSQL, `mlflow server`, `python -m trainer`,
two `mlflow models serve` (through our launcher) and `python -m services.gateway` instances with
different settings. Nothing is mocked.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import psycopg2
import pytest
import requests
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from contracts import synthetic
from contracts.drift import PROFILE_ARTIFACT
from contracts.models import format_upstreams, served_version
from contracts.predlog_migrations import apply_schema
from contracts.schema import FEATURE_NAMES
from contracts.settings import sqlalchemy_uri
from services.local import Processes, start_mlflow, start_serving, wait_http
from tests.conftest import ROOT, free_port, python_env
from tests.raising_model import POISON

pytestmark = pytest.mark.integration

LATENCY, BANDWIDTH = "latency-predictor", "bandwidth-efficiency-predictor"
TARGETS = {LATENCY: "latency_ms", BANDWIDTH: "bandwidth_efficiency"}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@dataclass
class Stack:
    tracking_uri: str
    client: MlflowClient
    procs: Processes
    upstreams: dict[str, str]  # model name -> serving base URL
    monitoring_dsn: str  # the prediction log's database


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen[bytes]

    def post(self, path: str, payload: Any, **kwargs: Any) -> requests.Response:
        return requests.post(f"{self.url}{path}", json=payload, timeout=30, **kwargs)

    def predict(self, model: str, records: list[dict[str, Any]]) -> requests.Response:
        return self.post(f"/models/{model}/predict", {"records": records})

    def samples(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Every sample of /metrics: name -> [(labels, value)]."""
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        found: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, []).append((sample.labels, sample.value))
        return found

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of the one sample of `name` with `labels` (a subset), or None."""
        values = [v for ls, v in self.samples().get(name, []) if labels.items() <= ls.items()]
        assert len(values) <= 1, (name, labels, values)
        return values[0] if values else None


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def records(n: int, seed: int, drift: float = 0.0) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    frame = synthetic.generate(n, seed=seed, drift=drift)
    return frame[list(FEATURE_NAMES)].to_dict(orient="records"), frame


def create_database(postgres_uri: str, name: str) -> str:
    """Create database `name` in the test cluster unless it exists; return its psycopg2 DSN."""
    admin_dsn = postgres_uri.replace("+psycopg2", "")
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="module")
def stack(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """MLflow (own database, so other modules' registries do not interfere), trained models, both
    model servers, and the `monitoring` database for the prediction log."""
    yield from build_stack(postgres_uri, tmp_path_factory, "gateway_mlflow")


def build_stack(
    postgres_uri: str, tmp_path_factory: pytest.TempPathFactory, database: str
) -> Iterator[Stack]:
    """The `stack` fixture's work, with MLflow's store in `database` of the session's cluster."""
    data_dir = tmp_path_factory.mktemp("gateway")
    procs = Processes(log_dir=data_dir / "logs")
    try:
        backend = sqlalchemy_uri(create_database(postgres_uri, database))
        tracking = start_mlflow(procs, backend, data_dir, free_port())
        trained = subprocess.run(
            [sys.executable, "-m", "trainer", "--participant", "gw", "--n-rows", "3000", "--models", "lr,rf"],
            env={**python_env(), "MLFLOW_TRACKING_URI": tracking}, cwd=ROOT,
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert trained.returncode == 0, trained.stderr[-3000:]
        client = MlflowClient(tracking)
        upstreams, servers = {}, []
        for name in TARGETS:
            port = free_port()
            servers.append((name, port, start_serving(procs, tracking, name, port)))
            upstreams[name] = f"http://127.0.0.1:{port}"
        for name, port, proc in servers:
            wait_http(f"http://127.0.0.1:{port}/ping", proc, 180, f"serving {name}")
        monitoring = create_database(postgres_uri, "monitoring")
        apply_schema(monitoring)  # as the create-databases job does: the gateway runs no DDL
        yield Stack(tracking, client, procs, upstreams, monitoring)
    finally:
        procs.stop_all()


def start_gateway(
    stack: Stack,
    label: str,
    upstreams: dict[str, str] | None = None,
    healthy: bool = True,
    port: int | None = None,
    **env: str,
) -> Gateway:
    """`python -m services.gateway` on a free port (or `port`: a socket listener's); waits for
    /health 200 (or, when the gateway cannot be healthy, for every model's version to be loaded)."""
    port = port or free_port()
    settings = {
        "GATEWAY_MODELS": format_upstreams(upstreams or stack.upstreams),
        "MLFLOW_TRACKING_URI": stack.tracking_uri,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_REFRESH_S": "1",
        "LOG_FLUSH_S": "0.2",
        **env,
    }
    proc = stack.procs.start(f"gateway-{label}", [sys.executable, "-m", "services.gateway"], settings)
    gateway = Gateway(f"http://127.0.0.1:{port}", proc)
    if healthy:
        wait_http(f"{gateway.url}/health", proc, 60, f"gateway {label}")
    else:
        wait_http(f"{gateway.url}/models", proc, 60, f"gateway {label}")
        wait_for(
            lambda: all(m["version"] for m in requests.get(f"{gateway.url}/models", timeout=5).json()),
            f"gateway {label} to load its models",
        )
    return gateway


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Gateway:
    """The gateway as deployed: both models, prediction log on."""
    return start_gateway(stack, "main", MONITORING_DB_URI=stack.monitoring_dsn)


def direct(stack: Stack, model: str, payload: Any) -> requests.Response:
    return requests.post(f"{stack.upstreams[model]}/invocations", json=payload, timeout=30)


def production(stack: Stack, model: str) -> Any:
    return stack.client.get_model_version_by_alias(model, "production")


def log_rows(stack: Stack, request_ids: list[str]) -> dict[str, tuple[Any, ...]]:
    """Logged rows by request id: (model, version, features, prediction, latency_ms, actual, feedback_ts)."""
    with psycopg2.connect(stack.monitoring_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT p.request_id, p.model, p.version, p.features, p.prediction, p.latency_ms, f.actual, "
            "f.ts FROM predictions AS p LEFT JOIN feedback AS f ON f.request_id = p.request_id "
            "WHERE p.request_id = ANY(%s)",
            (request_ids,),
        )
        rows = {row[0]: row[1:] for row in cur.fetchall()}
    conn.close()
    return rows


# -- serving --------------------------------------------------------------------------------------


def test_health_and_served_models(stack: Stack, gateway: Gateway) -> None:
    health = requests.get(f"{gateway.url}/health", timeout=5)
    assert health.status_code == 200
    assert {name: m["ok"] for name, m in health.json()["models"].items()} == {LATENCY: True, BANDWIDTH: True}
    served = {m["name"]: m for m in requests.get(f"{gateway.url}/models", timeout=5).json()}
    for name in TARGETS:
        version = production(stack, name)
        assert PROFILE_ARTIFACT in {a.path for a in stack.client.list_artifacts(version.run_id, "profile")}
        assert (served[name]["version"], served[name]["run_id"]) == (version.version, version.run_id)
        assert served[name]["alias"] == "production"
        assert served[name]["signature_columns"] == list(FEATURE_NAMES)
    assert "/models/{name}/predict" in requests.get(f"{gateway.url}/openapi.json", timeout=5).json()["paths"]


@pytest.mark.parametrize("model", list(TARGETS))
def test_predict_equals_the_model_server(stack: Stack, gateway: Gateway, model: str) -> None:
    rows, _ = records(5, seed=99)
    answer = gateway.predict(model, rows)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = direct(stack, model, {"dataframe_records": rows}).json()["predictions"]
    # Random forests sum their trees in thread order: equal up to rounding, not bit for bit.
    np.testing.assert_allclose(body["predictions"], expected, rtol=1e-9)
    assert (body["model"], body["version"]) == (model, production(stack, model).version)
    assert len(set(body["request_ids"])) == 5 and all(UUID.match(i) for i in body["request_ids"])
    assert UUID.match(answer.headers["X-Request-ID"])
    single = gateway.post(f"/models/{model}/predict", {"records": rows[0]})
    assert single.status_code == 200 and len(single.json()["predictions"]) == 1


def test_invalid_records_get_422_naming_each_problem(gateway: Gateway) -> None:
    rows, _ = records(3, seed=1)
    del rows[0]["hop_count"]
    rows[1]["distance_km"] = "far away"
    rows[1]["region"] = 7
    rows[2]["protocol"] = "sctp"  # outside the vocabulary: refused, not predicted as if absent
    answer = gateway.predict(LATENCY, rows)
    assert answer.status_code == 422
    assert answer.json()["error_code"] == "INVALID_INPUT"
    assert answer.json()["details"] == [
        {"row": 0, "field": "hop_count", "expected": "a number in [1, 30]", "got": "missing"},
        {"row": 1, "field": "distance_km", "expected": "a number in [1, 20000]", "got": 'string "far away"'},
        {
            "row": 1,
            "field": "region",
            "expected": "one of north-america, europe, asia-pacific, south-america, africa",
            "got": "number 7",
        },
        {"row": 2, "field": "protocol", "expected": "one of tcp, udp, quic", "got": 'string "sctp"'},
    ]
    assert gateway.post(f"/models/{LATENCY}/predict", {"rows": rows}).status_code == 422
    bad_json = requests.post(f"{gateway.url}/models/{LATENCY}/predict", data=b"{", timeout=10)
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["message"]


@pytest.mark.parametrize("endpoint", ["predict", "invocations", "feedback"])
def test_unknown_model_is_404_naming_the_known_models(gateway: Gateway, endpoint: str) -> None:
    rows, _ = records(1, seed=2)
    payload = {"feedback": []} if endpoint == "feedback" else {"records": rows, "dataframe_records": rows}
    answer = gateway.post(f"/models/nope/{endpoint}", payload)
    assert answer.status_code == 404 and answer.json()["error_code"] == "NOT_FOUND"
    assert answer.json()["message"] == f"unknown model 'nope'; the models are: {', '.join(sorted(TARGETS))}"


@pytest.mark.parametrize("form", ["dataframe_records", "dataframe_split", "csv"])
def test_invocations_pass_through_unchanged(stack: Stack, gateway: Gateway, form: str) -> None:
    rows, frame = records(4, seed=3)
    features = frame[list(FEATURE_NAMES)]
    if form == "csv":
        body, content_type = features.to_csv(index=False).encode(), "text/csv"
    else:
        payload = (
            {"dataframe_records": rows}
            if form == "dataframe_records"
            else {"dataframe_split": features.to_dict(orient="split", index=False)}
        )
        body, content_type = json.dumps(payload).encode(), "application/json"
    headers = {"Content-Type": content_type}
    via = requests.post(
        f"{gateway.url}/models/{BANDWIDTH}/invocations", data=body, headers=headers, timeout=30
    )
    straight = requests.post(
        f"{stack.upstreams[BANDWIDTH]}/invocations", data=body, headers=headers, timeout=30
    )
    assert via.status_code == straight.status_code == 200, via.text
    assert via.headers["content-type"] == straight.headers["content-type"]
    assert via.json().keys() == straight.json().keys() == {"predictions"}
    np.testing.assert_allclose(via.json()["predictions"], straight.json()["predictions"], rtol=1e-9)
    assert UUID.match(via.headers["X-Request-ID"])


def test_a_request_without_content_type_is_not_a_server_error(gateway: Gateway) -> None:
    rows, _ = records(1, seed=4)
    answer = requests.post(
        f"{gateway.url}/models/{LATENCY}/invocations",
        data=json.dumps({"dataframe_records": rows}),
        timeout=30,
    )
    assert "content-type" not in answer.request.headers
    assert answer.status_code == 200, answer.text


def test_what_makes_mlflow_answer_a_stack_trace_is_refused_first(stack: Stack, gateway: Gateway) -> None:
    rows, _ = records(1, seed=5)
    # JSON Infinity passes MLflow's schema check: then the scikit-learn form raises (MLflow answers
    # with a stack trace) and the ONNX form predicts a meaningless number.
    broken = json.dumps({"dataframe_records": [{**rows[0], "distance_km": float("inf")}]})
    headers = {"Content-Type": "application/json"}
    straight = requests.post(
        f"{stack.upstreams[LATENCY]}/invocations", data=broken, headers=headers, timeout=30
    )
    assert straight.status_code == 200 or "stack_trace" in straight.json()  # the model server takes it
    via = requests.post(
        f"{gateway.url}/models/{LATENCY}/invocations", data=broken, headers=headers, timeout=30
    )
    mistyped = json.dumps({"dataframe_records": [{**rows[0], "hop_count": "many"}]})
    refused = requests.post(
        f"{gateway.url}/models/{LATENCY}/invocations", data=mistyped, headers=headers, timeout=30
    )
    infinite = json.dumps({"records": [{**rows[0], "distance_km": float("inf")}]})
    predicted = requests.post(f"{gateway.url}/models/{LATENCY}/predict", data=infinite, timeout=30)
    for answer, field, got in (
        (via, "distance_km", "Infinity"),
        (refused, "hop_count", 'string "many"'),
        (predicted, "distance_km", "Infinity"),
    ):
        assert answer.status_code == 422, answer.text
        assert [(d["field"], d["got"]) for d in answer.json()["details"]] == [(field, got)]
        assert "stack_trace" not in answer.text and "Traceback" not in answer.text


# -- feedback, metrics, prediction log ------------------------------------------------------------


def test_feedback_is_matched_by_any_gateway_process(stack: Stack, gateway: Gateway) -> None:
    """Two gateway processes on one prediction log, as replicas run: feedback for a prediction one
    answered is matched by the other (through Postgres: neither remembers the other's)."""
    replica = start_gateway(stack, "replica", MONITORING_DB_URI=stack.monitoring_dsn, LOG_FLUSH_S="1")
    try:
        rows, frame = records(20, seed=6)
        answer = replica.predict(BANDWIDTH, rows).json()
        actual = frame["bandwidth_efficiency"].to_numpy()
        feedback = [
            {"request_id": i, "actual": float(a)} for i, a in zip(answer["request_ids"], actual, strict=True)
        ]
        unknown = str(uuid.uuid4())
        result = gateway.post(
            f"/models/{BANDWIDTH}/feedback", {"feedback": [*feedback, {"request_id": unknown, "actual": 1}]}
        )
        assert result.status_code == 200 and result.json() == {"accepted": 20, "unknown": [unknown]}
        assert gateway.metric("gateway_feedback_total", model=BANDWIDTH) == 20
        ids = answer["request_ids"]

        def fed_back() -> dict[str, tuple[Any, ...]] | None:
            found = log_rows(stack, ids)
            return found if all(row[5] is not None for row in found.values()) else None

        logged = wait_for(fed_back, "the feedback in the log")
        assert [logged[i][5] for i in ids] == pytest.approx(list(actual))
        again = replica.post(f"/models/{BANDWIDTH}/feedback", {"feedback": feedback[:1]})
        assert again.json() == {"accepted": 0, "unknown": [feedback[0]["request_id"]]}
    finally:
        replica.proc.terminate()
        replica.proc.wait(30)


def test_predictions_and_feedback_are_logged_to_postgres(stack: Stack, gateway: Gateway) -> None:
    rows, frame = records(4, seed=7)
    answer = gateway.predict(LATENCY, rows).json()
    ids = answer["request_ids"]
    logged = wait_for(lambda: len(found := log_rows(stack, ids)) == 4 and found, "4 logged predictions")
    for request_id, row, prediction in zip(ids, rows, answer["predictions"], strict=True):
        model, version, features, logged_prediction, latency_ms, actual, feedback_ts = logged[request_id]
        assert (model, version, features, actual) == (LATENCY, answer["version"], row, None)
        assert logged_prediction == pytest.approx(prediction) and latency_ms > 0
    feedback = [{"request_id": ids[0], "actual": float(frame["latency_ms"].iloc[0])}]
    assert gateway.post(f"/models/{LATENCY}/feedback", {"feedback": feedback}).json()["accepted"] == 1
    updated = wait_for(lambda: (r := log_rows(stack, ids))[ids[0]][5] is not None and r, "the logged actual")
    assert updated[ids[0]][5] == pytest.approx(feedback[0]["actual"]) and updated[ids[0]][6] is not None
    assert all(updated[i][5] is None for i in ids[1:])
    # Passthrough rows are logged too, as <X-Request-ID>-<row>.
    via = gateway.post(f"/models/{LATENCY}/invocations", {"dataframe_records": rows[:2]})
    passthrough = [f"{via.headers['X-Request-ID']}-{i}" for i in range(2)]
    wait_for(lambda: len(log_rows(stack, passthrough)) == 2, "logged passthrough rows")
    assert gateway.metric("gateway_prediction_log_written_total") >= 6  # type: ignore[operator]


def test_metrics_follow_the_contract(gateway: Gateway) -> None:
    samples = gateway.samples()
    contract = (ROOT / "docs" / "monitoring.md").read_text().split("## Gateway metrics")[1].split("\n## ")[0]
    names = set(re.findall(r"`((?:gateway|process)_[a-z0-9_]+)", contract))
    assert len(names) > 20
    histograms = {"gateway_request_duration_seconds", "gateway_upstream_duration_seconds",
                  "gateway_overhead_seconds", "gateway_prediction_value", "gateway_batch_size",
                  "gateway_queue_wait_seconds"}  # fmt: skip
    for name in names:
        exported = f"{name}_bucket" if name in histograms else name
        assert exported in samples, name
    ok = [ls for ls, _ in samples["gateway_requests_total"] if ls["status"] == "200"]
    assert {(ls["model"], ls["endpoint"]) for ls in ok} >= {(LATENCY, "predict"), (BANDWIDTH, "invocations")}
    assert all(
        set(ls) == {"model", "version", "endpoint", "status"} for ls, _ in samples["gateway_requests_total"]
    )
    info = {ls["model"]: ls for ls, v in samples["gateway_model_info"] if v == 1}
    assert set(info) == set(TARGETS) and all(
        ls["alias"] == "production" and ls["run_id"] for ls in info.values()
    )
    buckets = [
        float(ls["le"]) for ls, _ in samples["gateway_overhead_seconds_bucket"] if ls["model"] == LATENCY
    ]
    assert min(buckets) <= 0.0001 and max(b for b in buckets if b != float("inf")) >= 0.05
    overhead = gateway.metric("gateway_overhead_seconds_sum", model=LATENCY)
    upstream = gateway.metric("gateway_upstream_duration_seconds_sum", model=LATENCY)
    assert overhead is not None and upstream is not None and 0 < overhead < upstream


# -- batching -------------------------------------------------------------------------------------


def at_once(gateway: Gateway, requests_: list[tuple[str, Any]]) -> list[requests.Response]:
    """POST every (path, JSON body) from its own thread, all released together; answers in order."""
    answers: list[Any] = [None] * len(requests_)
    barrier = threading.Barrier(len(requests_))

    def post(i: int) -> None:
        barrier.wait()
        answers[i] = gateway.post(*requests_[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(requests_))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def test_concurrent_requests_share_upstream_calls_and_get_the_unbatched_answers(
    stack: Stack, gateway: Gateway
) -> None:
    """32 clients at once in front of the real model server: fewer calls than requests (the
    gateway's gateway_batch_size), each answer what the model server answers for its rows alone."""
    rows, _ = records(48, seed=40)
    chunks = [rows[i : i + 1 + i % 2] for i in range(0, 48, 3)][:16] * 2  # 1 and 2 rows
    path = f"/models/{LATENCY}/"
    sent = [
        (path + "predict", {"records": chunk})
        if i % 2
        else (path + "invocations", {"dataframe_records": chunk})
        for i, chunk in enumerate(chunks)
    ]
    labels = {"model": LATENCY}
    calls_before = gateway.metric("gateway_batch_size_count", **labels) or 0
    carried_before = gateway.metric("gateway_batch_size_sum", **labels) or 0
    answers = at_once(gateway, sent)
    calls = gateway.metric("gateway_batch_size_count", **labels) - calls_before  # type: ignore[operator]
    assert gateway.metric("gateway_batch_size_sum", **labels) - carried_before == len(sent)  # type: ignore[operator]
    assert calls < len(sent), f"{calls} upstream calls for {len(sent)} concurrent requests"
    for chunk, answer in zip(chunks, answers, strict=True):
        assert answer.status_code == 200, answer.text
        alone = direct(stack, LATENCY, {"dataframe_records": chunk}).json()["predictions"]
        np.testing.assert_allclose(answer.json()["predictions"], alone, rtol=1e-9)
        assert len(answer.json()["predictions"]) == len(chunk)


@pytest.fixture(scope="module")
def raising(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    """A gateway in front of `mlflow models serve` of tests/raising_model.py, as the latency model."""
    path = tmp_path_factory.mktemp("raising") / "model"
    mlflow.pyfunc.save_model(
        str(path), python_model=str(ROOT / "tests/raising_model.py"), pip_requirements=["mlflow"]
    )
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "--model-uri", str(path),
               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    proc = stack.procs.start("serving-raising", command, {})
    wait_http(f"http://127.0.0.1:{port}/ping", proc, 180, "serving the raising model")
    return start_gateway(stack, "raising", {LATENCY: f"http://127.0.0.1:{port}"})


def test_a_row_that_makes_the_model_raise_fails_only_its_own_request(raising: Gateway) -> None:
    rows, _ = records(13, seed=41)
    rows[8]["distance_km"] = POISON  # a valid value: the gateway forwards it, the model raises
    upstream = requests.get(f"{raising.url}/models", timeout=5).json()[0]["upstream"]
    leading = threading.Thread(target=raising.predict, args=(LATENCY, rows[:1]))
    leading.start()  # keeps the model server busy while the others arrive, so they queue
    time.sleep(0.03)
    answers = at_once(raising, [(f"/models/{LATENCY}/predict", {"records": [row]}) for row in rows[1:]])
    leading.join(30)
    for row, answer in zip(rows[1:], answers, strict=True):
        if row["distance_km"] == POISON:
            assert answer.status_code == 502, answer.text
            assert answer.json()["message"].startswith(
                f"the model server for {LATENCY} failed on a valid request"
            )
        else:
            assert answer.status_code == 200, answer.text
            alone = requests.post(f"{upstream}/invocations", json={"dataframe_records": [row]}, timeout=30)
            assert answer.json()["predictions"] == alone.json()["predictions"]
    assert raising.metric("gateway_batch_fallbacks_total", model=LATENCY) == 1
    assert raising.metric("gateway_requests_total", model=LATENCY, endpoint="predict", status="502") == 1
    assert raising.metric("gateway_requests_total", model=LATENCY, endpoint="predict", status="200") == 12


@pytest.fixture(scope="module")
def degraded(stack: Stack) -> Gateway:
    """Postgres unreachable (no spool), a tiny log buffer, and the bandwidth model server down."""
    return start_gateway(
        stack, "degraded",
        {LATENCY: stack.upstreams[LATENCY], BANDWIDTH: f"http://127.0.0.1:{free_port()}"},
        healthy=False,
        MONITORING_DB_URI=f"postgresql://mlflow@127.0.0.1:{free_port()}/monitoring",
        LOG_BUFFER_MAX="50", LOG_BATCH_SIZE="10", GATEWAY_UPSTREAM_RETRY_S="1",
    )  # fmt: skip


def test_postgres_down_holds_records_then_pushes_back_and_drops_nothing(degraded: Gateway) -> None:
    """No spool configured: LOG_BUFFER_MAX records wait in memory; beyond, 503 before the model."""
    rows, _ = records(70, seed=11)
    assert degraded.predict(LATENCY, rows[:30]).status_code == 200
    wait_for(lambda: degraded.metric("gateway_prediction_log_buffered") == 30, "30 buffered records")
    refused = degraded.predict(LATENCY, rows[30:])  # 30 + 40 > 50
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "2", refused.text
    assert "LOG_BUFFER_MAX" in refused.json()["message"]
    assert degraded.predict(LATENCY, rows[30:45]).status_code == 200  # 30 + 15 fit
    assert degraded.metric("gateway_prediction_log_dropped_total") == 0
    assert degraded.metric("gateway_requests_pushed_back_total", reason="memory_full") == 1
    assert degraded.metric("gateway_prediction_log_written_total") == 0


def test_a_down_model_server_fails_health_and_requests_clearly(degraded: Gateway) -> None:
    health = requests.get(f"{degraded.url}/health", timeout=5)
    assert health.status_code == 503
    models = health.json()["models"]
    assert models[LATENCY]["ok"] is True and models[BANDWIDTH]["ok"] is False
    assert "unreachable" in models[BANDWIDTH]["upstream_ping"]
    rows, _ = records(1, seed=12)
    for endpoint, payload in (("predict", {"records": rows}), ("invocations", {"dataframe_records": rows})):
        answer = degraded.post(f"/models/{BANDWIDTH}/{endpoint}", payload)
        assert answer.status_code == 503, answer.text
        assert answer.json()["message"].startswith(f"the model server for {BANDWIDTH} is unavailable")
    assert degraded.predict(LATENCY, rows).status_code == 200
    assert degraded.metric("gateway_requests_total", model=BANDWIDTH, endpoint="predict", status="503") == 1


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers: a hung server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


@pytest.fixture(scope="module")
def lazy(stack: Stack, silent_port: int) -> Gateway:
    """Writes its prediction log only at shutdown; the bandwidth model server hangs."""
    return start_gateway(
        stack, "lazy",
        {LATENCY: stack.upstreams[LATENCY], BANDWIDTH: f"http://127.0.0.1:{silent_port}"},
        healthy=False,
        MONITORING_DB_URI=stack.monitoring_dsn, LOG_FLUSH_S="600", LOG_BATCH_SIZE="10000",
        GATEWAY_UPSTREAM_TIMEOUT_S="1",
    )  # fmt: skip


def test_a_hung_model_server_times_out_with_504(lazy: Gateway) -> None:
    rows, _ = records(1, seed=15)
    started = time.monotonic()
    answer = lazy.predict(BANDWIDTH, rows)
    assert answer.status_code == 504
    assert answer.json()["message"].startswith(f"the model server for {BANDWIDTH} timed out")
    assert time.monotonic() - started < 5
    health = requests.get(f"{lazy.url}/health", timeout=10)
    assert health.status_code == 503 and "no answer" in health.json()["models"][BANDWIDTH]["upstream_ping"]


def test_sigterm_flushes_the_prediction_log(stack: Stack, lazy: Gateway) -> None:
    rows, _ = records(3, seed=13)
    ids = lazy.predict(LATENCY, rows).json()["request_ids"]
    wait_for(lambda: lazy.metric("gateway_prediction_log_buffered") == 3, "3 buffered records")
    assert log_rows(stack, ids) == {}
    lazy.proc.send_signal(signal.SIGTERM)
    assert lazy.proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    assert set(log_rows(stack, ids)) == set(ids)


# -- registry -------------------------------------------------------------------------------------


def test_a_rollout_fails_no_request_and_labels_answers_by_the_version_that_answers(
    stack: Stack, gateway: Gateway
) -> None:
    """Another candidate (different predictions) becomes production: the serving launcher starts it
    beside the old version, both answer for a moment, then the old one stops. Every answer is a 200
    and carries the label of the version that computed it (the model server's X-Model-Version on
    that very answer), also while the gateway's keep-alive connections still reach the old server."""
    before = production(stack, LATENCY)
    experiment = stack.client.get_experiment_by_name("gw")
    assert experiment is not None
    runs = stack.client.search_runs([experiment.experiment_id], "params.target = 'latency_ms'")
    other = next(r for r in runs if r.info.run_id != before.run_id)
    mlflow.set_tracking_uri(stack.tracking_uri)
    moved = mlflow.register_model(f"runs:/{other.info.run_id}/model", LATENCY)
    rows, frame = records(3, seed=14)
    expected = {
        v: mlflow.pyfunc.load_model(f"models:/{LATENCY}/{v}").predict(frame)
        for v in (before.version, moved.version)
    }
    assert not np.allclose(expected[before.version], expected[moved.version])

    def predict_until(version: str) -> list[str]:
        """Predict continuously until answers carry `version` ten times in a row; every answer must
        be a 200 whose predictions are those of the version it names."""
        labels, deadline = [], time.monotonic() + 180
        while labels[-10:] != [version] * 10:
            assert time.monotonic() < deadline, f"the gateway never answered with v{version}: {labels[-3:]}"
            answer = gateway.predict(LATENCY, rows)
            assert answer.status_code == 200, answer.text
            label = answer.json()["version"]
            np.testing.assert_allclose(answer.json()["predictions"], expected[label], rtol=1e-9)
            labels.append(label)
            time.sleep(0.05)
        return labels

    stack.client.set_registered_model_alias(LATENCY, "production", moved.version)
    try:
        labels = predict_until(moved.version)
        assert set(labels) == {before.version, moved.version}
        upstream = stack.upstreams[LATENCY]
        wait_for(lambda: served_version(upstream) == moved.version, "the old server to stop", 30)

        def info() -> set[str]:
            samples = gateway.samples()["gateway_model_info"]
            return {ls["version"] for ls, v in samples if ls["model"] == LATENCY and v}

        # The answers' labels come from the model server's replies; the poller (what requests are
        # checked against, and gateway_model_info) follows within GATEWAY_REFRESH_S (1 s here).
        wait_for(lambda: info() == {moved.version}, f"gateway_model_info to name v{moved.version}", 10)
    finally:
        stack.client.set_registered_model_alias(LATENCY, "production", before.version)
    predict_until(before.version)
