"""Nothing the gateway answers is lost, and restarts fail no request (issue 12, parts 5, 7 and 8).

Real processes only: the gateway (`python -m services.gateway`: the supervisor and its worker),
`mlflow server`, two `mlflow models serve` through the serving launcher, and a PostgreSQL cluster of
this module's own that the tests stop and start. The full volume is a real 192 KiB tmpfs, mounted in
a user namespace of the gateway's own (`unshare -Urm`: no privileges needed), so the spool's writes
fail with ENOSPC exactly as on a full Docker volume.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests

from contracts.predlog_migrations import apply_schema
from services.local import start_serving, wait_http
from tests.conftest import free_port
from tests.gateway_support import Postgres
from tests.integration.test_gateway import (
    BANDWIDTH,
    LATENCY,
    Gateway,
    Stack,
    build_stack,
    records,
    start_gateway,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """MLflow with trained models and both model servers (test_gateway.py's, own database)."""
    yield from build_stack(postgres_uri, tmp_path_factory, "durable_mlflow")


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """The prediction log's Postgres, stoppable; its database `monitoring`."""
    postgres = Postgres(tmp_path_factory.mktemp("monitoring"))
    conn = psycopg2.connect(postgres.dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE monitoring")
    conn.close()
    postgres.dsn = postgres.dsn.rsplit("/", 1)[0] + "/monitoring"
    apply_schema(postgres.dsn)  # as the create-databases job does: the gateway runs no DDL
    try:
        yield postgres
    finally:
        postgres.procs.stop_all()


def logged(dsn: str, request_ids: list[str]) -> dict[str, Any]:
    """request_id -> actual (None: no feedback), of the logged predictions among `request_ids`."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT p.request_id, f.actual FROM predictions AS p "
                "LEFT JOIN feedback AS f ON f.request_id = p.request_id WHERE p.request_id = ANY(%s)",
                (request_ids,),
            )
            return dict(cur.fetchall())
    except psycopg2.errors.UndefinedTable:
        return {}
    finally:
        conn.close()


@dataclass
class Traffic:
    """`clients` threads predicting (and posting feedback for every other answer) in a loop."""

    gateway: Gateway
    clients: int = 4
    answered: list[str] = field(default_factory=list)  # request ids of 200 answers
    failures: list[str] = field(default_factory=list)
    pushed_back: int = 0
    feedback: bool = True  # post feedback (the gateway has a prediction log to match it in)
    feedback_posted: int = 0
    # Feedback answered 200 with ids unknown: 0, since feedback is matched in Postgres whichever
    # worker or replica answered the prediction.
    feedback_unknown: int = 0
    feedback_refused: int = 0  # 503 + Retry-After: the log could not be read (Postgres down)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _client(self, seed: int) -> None:
        rows, _ = records(2, seed=seed)
        with requests.Session() as session:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    answer = session.post(
                        f"{self.gateway.url}/models/{LATENCY}/predict", json={"records": rows}, timeout=60
                    )
                except requests.RequestException as exc:
                    self.failures.append(f"predict: {exc}")
                    continue
                if answer.status_code == 503 and "Retry-After" in answer.headers:
                    self.pushed_back += 1
                    time.sleep(0.2)
                    continue
                if answer.status_code != 200:
                    self.failures.append(f"predict: {answer.status_code} {answer.text[:200]}")
                    continue
                ids = answer.json()["request_ids"]
                self.answered.extend(ids)
                if n % 2 or not self.feedback:
                    continue
                items = [{"request_id": i, "actual": 1.0} for i in ids]
                try:
                    fed = session.post(
                        f"{self.gateway.url}/models/{LATENCY}/feedback", json={"feedback": items}, timeout=60
                    )
                except requests.RequestException as exc:
                    self.failures.append(f"feedback: {exc}")
                    continue
                if fed.status_code == 503 and "Retry-After" in fed.headers:
                    self.feedback_refused += 1
                    continue
                if fed.status_code != 200:
                    self.failures.append(f"feedback: {fed.status_code} {fed.text[:200]}")
                    continue
                self.feedback_posted += 1
                self.feedback_unknown += len(fed.json()["unknown"])
                time.sleep(0.01)

    def __enter__(self) -> Traffic:
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, args=(100 + i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)

    def wait_answers(self, n: int, timeout: float = 60) -> None:
        start = len(self.answered)
        wait_for(lambda: len(self.answered) >= start + n, f"{n} more answers", timeout)


def assert_every_answer_logged(gateway: Gateway, monitoring: Postgres, traffic: Traffic) -> None:
    """No request failed, no feedback was unknown, every request id the traffic got an answer for
    reaches the table, and none was dropped."""
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.feedback_unknown == 0
    wait_for(
        lambda: len(logged(monitoring.dsn, traffic.answered)) == len(traffic.answered),
        "every answered row in the table",
        60,
    )
    assert gateway.metric("gateway_prediction_log_dropped_total") == 0


def gateway_pids(gateway: Gateway) -> set[int]:
    """The supervisor's worker processes (children of the gateway process)."""
    children = Path(f"/proc/{gateway.proc.pid}/task/{gateway.proc.pid}/children").read_text().split()
    return {int(pid) for pid in children}


# -- part 7: the prediction log -------------------------------------------------------------------


def test_postgres_down_then_up_every_answered_row_arrives(
    stack: Stack, monitoring: Postgres, tmp_path: Path
) -> None:
    gateway = start_gateway(
        stack, "spooling", MONITORING_DB_URI=monitoring.dsn, GATEWAY_SPOOL_DIR=str(tmp_path / "spool"),
        LOG_BUFFER_MAX="200",  # far less than what is answered while Postgres is down: the spool holds it
    )  # fmt: skip
    try:
        with Traffic(gateway) as traffic:
            traffic.wait_answers(20)
            monitoring.stop()
            traffic.wait_answers(400)
            assert gateway.metric("gateway_prediction_log_spool_rows") > 0  # type: ignore[operator]
            monitoring.start()
            traffic.wait_answers(20)
        assert traffic.failures == [] and traffic.pushed_back == 0
        wait_for(lambda: gateway.metric("gateway_prediction_log_spool_rows") == 0, "the spool replayed", 60)
        assert_every_answer_logged(gateway, monitoring, traffic)
    finally:
        monitoring.start()
        gateway.proc.send_signal(signal.SIGTERM)
        gateway.proc.wait(60)
    assert list((tmp_path / "spool").glob("*/*.jsonl")) == []


def test_a_full_volume_gets_503_before_the_model_and_loses_nothing(
    stack: Stack, monitoring: Postgres, tmp_path: Path
) -> None:
    """The spool on a real 192 KiB filesystem, Postgres down: the volume fills, the gateway says so
    (log line, metric) and answers 503 with Retry-After; every row it answered arrives once
    Postgres is back."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is not installed")
    spool = tmp_path / "spool"
    spool.mkdir()
    port = free_port()
    mount = (
        f"mount -t tmpfs -o size=192k,mode=0700 gateway-spool {spool} "
        f"&& exec {sys.executable} -m services.gateway"
    )
    env = {
        "GATEWAY_MODELS": ",".join(f"{n}={u}" for n, u in stack.upstreams.items()),
        "MLFLOW_TRACKING_URI": stack.tracking_uri,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "MONITORING_DB_URI": monitoring.dsn,
        "GATEWAY_SPOOL_DIR": str(spool),
        "GATEWAY_SPOOL_MAX_BYTES": str(1 << 30),  # the volume fills long before this
        "LOG_BUFFER_MAX": "300",
        "LOG_FLUSH_S": "0.1",
    }
    proc = stack.procs.start("gateway-full-volume", ["unshare", "-Urm", "sh", "-c", mount], env)
    gateway = Gateway(f"http://127.0.0.1:{port}", proc)
    wait_http(f"{gateway.url}/health", proc, 60, "gateway on a small volume")
    log_path = stack.procs.log_dir / "gateway-full-volume.log"
    monitoring.stop()
    try:
        answered: list[str] = []
        refused = None
        rows, _ = records(20, seed=31)
        for _ in range(2000):  # 20 rows of ~300 bytes each: 192 KiB hold about 30 requests
            before = gateway.metric("gateway_upstream_duration_seconds_count", model=LATENCY)
            answer = gateway.predict(LATENCY, rows)
            if answer.status_code == 503:
                refused = answer
                after = gateway.metric("gateway_upstream_duration_seconds_count", model=LATENCY)
                assert after == before  # refused before the model was called
                break
            assert answer.status_code == 200, answer.text
            answered.extend(answer.json()["request_ids"])
            time.sleep(0.02)
        assert refused is not None, "the gateway never pushed back"
        assert refused.headers["Retry-After"] == "2"
        assert "spool cannot be written" in refused.json()["message"]
        assert gateway.metric("gateway_prediction_log_spool_errors_total", error="ENOSPC") >= 1  # type: ignore[operator]
        assert "No space left on device (ENOSPC)" in log_path.read_text()
        assert gateway.proc.poll() is None  # no crash
        assert gateway.post(f"/models/{LATENCY}/feedback", {"feedback": []}).status_code in (200, 503)
        monitoring.start()
        wait_for(
            lambda: len(logged(monitoring.dsn, answered)) == len(answered),
            "every answered row in the table",
            60,
        )
        assert gateway.predict(LATENCY, rows).status_code == 200  # room again
        assert gateway.metric("gateway_prediction_log_dropped_total") == 0
    finally:
        monitoring.start()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


# -- part 8: restarts -----------------------------------------------------------------------------


def test_sigterm_lets_requests_in_flight_finish(stack: Stack, monitoring: Postgres) -> None:
    """A model server that takes 2 s per request: SIGTERM arrives while 4 are in flight; all 4 are
    answered, their rows are written, then the gateway exits 0."""
    from tests.gateway_support import ScoringServer

    slow = ScoringServer(delay_s=2.0).start()
    try:
        gateway = start_gateway(
            stack, "draining", {LATENCY: slow.url, BANDWIDTH: stack.upstreams[BANDWIDTH]},
            MONITORING_DB_URI=monitoring.dsn, GATEWAY_UPSTREAM_CONCURRENCY="0", GATEWAY_BATCHING="false",
        )  # fmt: skip
        results: list[requests.Response] = []
        rows, _ = records(1, seed=41)

        def call() -> None:
            results.append(gateway.predict(LATENCY, rows))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(slow.received) == 4, "4 requests in flight")
        gateway.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        assert [r.status_code for r in results] == [200] * 4
        assert gateway.proc.wait(30) == 0
        ids = [r.json()["request_ids"][0] for r in results]
        assert set(logged(monitoring.dsn, ids)) == set(ids)
    finally:
        slow.stop()


def test_a_reload_under_traffic_fails_nothing_and_loses_no_row(
    stack: Stack, monitoring: Postgres, tmp_path: Path
) -> None:
    """SIGHUP twice while 4 clients predict and post feedback on keep-alive connections: a new
    worker takes over each time, and the old one's lame duck closes each connection after an answer
    (worker.py), so no request races the close of an idle connection."""
    gateway = start_gateway(
        stack, "reloading", MONITORING_DB_URI=monitoring.dsn, GATEWAY_SPOOL_DIR=str(tmp_path / "spool")
    )
    try:
        first = gateway_pids(gateway)
        with Traffic(gateway) as traffic:
            for _ in range(2):
                traffic.wait_answers(40)
                before = gateway_pids(gateway)
                gateway.proc.send_signal(signal.SIGHUP)
                wait_for(lambda b=before: gateway_pids(gateway) - b and len(gateway_pids(gateway)) == 1,
                         "the new worker alone", 90)  # fmt: skip
            traffic.wait_answers(40)
        assert gateway_pids(gateway).isdisjoint(first)
        assert traffic.feedback_posted > 10
        assert_every_answer_logged(gateway, monitoring, traffic)
    finally:
        gateway.proc.send_signal(signal.SIGTERM)
        gateway.proc.wait(60)


def test_replicas_on_the_listeners_socket_are_replaced_under_traffic_and_fail_nothing(
    stack: Stack, monitoring: Postgres, tmp_path: Path
) -> None:
    """Two gateway replicas accept on the public socket of one socket listener (services/listener),
    as in the compose stack, while 4 clients predict and post feedback. Each replica in turn gets
    SIGTERM and exits, then a new one starts (what recreating a container does): clients go to the
    other replica or wait in the backlog, none fails, every answer is logged, and feedback for what
    a stopped replica answered is still matched (in Postgres). Each gateway opening its own socket
    instead fails requests with `Connection refused` between the two."""
    port, handover = free_port(), str(tmp_path / "listener.sock")
    stack.procs.start(
        "listener",
        [sys.executable, "-m", "services.listener"],
        {"LISTENER_SOCKETS": f"public=127.0.0.1:{port}", "LISTENER_PATH": handover},
    )

    def start(label: str) -> Gateway:
        return start_gateway(
            stack, label, port=port, GATEWAY_LISTENER=handover, MONITORING_DB_URI=monitoring.dsn,
            GATEWAY_SPOOL_DIR=str(tmp_path / "spool"),  # one volume for all, as in compose
        )  # fmt: skip

    replicas = [start("replica-a"), start("replica-b")]
    with Traffic(replicas[0]) as traffic:
        for n in range(3):
            traffic.wait_answers(40)
            old = replicas.pop(0)
            old.proc.send_signal(signal.SIGTERM)
            assert old.proc.wait(60) == 0
            replicas.append(start(f"replica-{n}"))
        traffic.wait_answers(40)
    try:
        assert traffic.feedback_posted > 10
        for replica in replicas:
            assert_every_answer_logged(replica, monitoring, traffic)
    finally:
        for replica in replicas:
            replica.proc.send_signal(signal.SIGTERM)
            replica.proc.wait(60)


def test_a_killed_worker_is_replaced_and_waiting_connections_are_served(stack: Stack) -> None:
    gateway = start_gateway(stack, "crashing")
    try:
        (worker,) = gateway_pids(gateway)
        os.kill(worker, signal.SIGKILL)
        rows, _ = records(1, seed=51)
        answer = gateway.predict(LATENCY, rows)  # waits in the backlog for the next worker
        assert answer.status_code == 200, answer.text
        assert gateway_pids(gateway) - {worker}
    finally:
        gateway.proc.send_signal(signal.SIGTERM)
        gateway.proc.wait(60)


def test_a_serving_restart_under_traffic_fails_no_request(stack: Stack) -> None:
    """The latency model's serving launcher is stopped and started again on its port while 4 clients
    predict: the gateway retries the refused connections until it answers."""
    port = free_port()
    serving = start_serving(stack.procs, stack.tracking_uri, LATENCY, port)
    wait_http(f"http://127.0.0.1:{port}/ping", serving, 180, "serving")
    gateway = start_gateway(
        stack, "retrying", {LATENCY: f"http://127.0.0.1:{port}", BANDWIDTH: stack.upstreams[BANDWIDTH]},
        GATEWAY_UPSTREAM_RETRY_S="60", GATEWAY_UPSTREAM_TIMEOUT_S="90",
    )  # fmt: skip
    try:
        with Traffic(gateway, feedback=False) as traffic:
            traffic.wait_answers(20)
            os.killpg(serving.pid, signal.SIGTERM)
            serving.wait(60)
            down_at = len(traffic.answered)
            time.sleep(1)
            serving = start_serving(stack.procs, stack.tracking_uri, LATENCY, port)
            wait_http(f"http://127.0.0.1:{port}/ping", serving, 180, "serving again")
            traffic.wait_answers(40)
        assert traffic.failures == [], traffic.failures[:5]
        assert len(traffic.answered) > down_at
        assert gateway.metric("gateway_upstream_retries_total", model=LATENCY) > 0  # type: ignore[operator]
    finally:
        gateway.proc.send_signal(signal.SIGTERM)
        gateway.proc.wait(60)
        os.killpg(serving.pid, signal.SIGTERM)
        serving.wait(60)
