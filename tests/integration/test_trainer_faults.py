"""The trainer under faults: a real training session against a real MLflow server on a real
PostgreSQL cluster (both this module's own, so they can be restarted), with one of them restarted
mid-session (stopped, down for a few seconds, started again, as `docker compose restart` does).

Expected (issue 12, part 5): the session completes, thanks to the MLflow client's retries the
trainer sets (6 over about a minute), or, when the outage outlasts them, the trainer marks its runs
FAILED once the server answers again and exits 1 with one line naming what failed. Either way, no
run stays RUNNING and no version is half-registered (without its description or its `promotion.*`
tags, or without the alias the session gave it), and no alias names a version that is not complete.
Recovery times (fault to the server answering again) are printed. Here: a Postgres restart, and an
MLflow outage longer than the retries. A restart of MLflow and of S3 mid-session, each slow (MLflow
takes minutes to start again on a loaded machine), run once against the compose stack instead, where
`make train` meets them as a participant does (tests/stack/test_faults.py).

Measured on a loaded 2-core machine (December 2026): each session completed. The MLflow server took
103 s to answer again after its restart (schema check and start-up), longer than the minute of
retries the trainer first had: that session failed, so the trainer now keeps MLflow's ~4 minutes.
Under a load of 14 to 21 it took 183 s, and the session still completed (545 s in all).
Postgres was back in 3 to 5 s; the server answered 503 meanwhile and the client's retries covered
it. S3: 6 connections reset, MLflow answered 2 uploads 500, the retries covered them, and every
artifact downloads afterwards.
A failed session left runs RUNNING (the server was down as they ended: 2 in the outage test) and
printed MLflow's whole exception; it now marks them FAILED once the server is back and prints one
short line naming the request that failed and why.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from contracts.models import model_for_target
from services.local import (
    Processes,
    child_env,
    postgres_bindir,
    start_mlflow,
    start_postgres,
)
from tests.conftest import ROOT, free_port, require

pytestmark = pytest.mark.integration

LATENCY = model_for_target("latency_ms").name
# A small session that still registers: two candidates, one target, a few thousand rows.
TRAINER_ARGS = ["--n-rows", "3000", "--models", "lr,rf", "--targets", "latency_ms"]


@dataclass
class Platform:
    procs: Processes
    base: Path
    backend_uri: str
    pg_port: int
    mlflow_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def _stop(self, name: str, sig: signal.Signals) -> subprocess.Popen[bytes]:
        [proc] = [p for n, p in self.procs.children if n == name and p.poll() is None]
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)
        return proc

    def restart_mlflow(self, down_s: float) -> None:
        self._stop("mlflow", signal.SIGTERM)
        time.sleep(down_s)
        start_mlflow(self.procs, self.backend_uri, self.base, self.mlflow_port)

    def restart_postgres(self, down_s: float) -> None:
        # SIGINT: PostgreSQL's fast shutdown (the official image's stop signal), which closes the
        # server's pooled connections; SIGTERM would wait for them to go away.
        proc = self._stop("postgres", signal.SIGINT)
        time.sleep(down_s)
        self.procs.start("postgres", list(proc.args))  # type: ignore[arg-type]
        ready = [str(postgres_bindir() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.pg_port)]  # type: ignore[operator]
        deadline = time.monotonic() + 60
        while subprocess.run(ready, capture_output=True).returncode:
            assert time.monotonic() < deadline, self.procs.tail("postgres")
            time.sleep(0.2)

    def answering(self, timeout: float = 180) -> float:
        """Wait until the server answers a registry read (so its database is back too); returns when."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                answer = requests.get(
                    f"{self.url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=5
                )
                if answer.status_code == 200:
                    return time.monotonic()
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"MLflow did not answer within {timeout} s:\n{self.procs.tail('mlflow')}")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    require("PostgreSQL server (Debian package postgresql)", postgres_bindir())
    base = tmp_path_factory.mktemp("trainer-faults")
    procs = Processes(log_dir=base / "logs")
    pg_port, mlflow_port = free_port(), free_port()
    try:
        backend = start_postgres(procs, base / "cluster", pg_port)
        start_mlflow(procs, backend, base, mlflow_port)
        yield Platform(procs, base, backend, pg_port, mlflow_port)
    finally:
        procs.stop_all()


@dataclass
class Session:
    returncode: int
    stdout: str
    stderr: str
    recovery_s: float
    seconds: float


def train_through(
    url: str,
    fault: Callable[[], None],
    recovered: Callable[[], float],
    workdir: Path,
    participant: str,
    **env: str,
) -> Session:
    """Run a training session against `url`; once its second candidate starts training, inject
    `fault`; `recovered` waits until the faulty component answers again and says when."""
    out, err = workdir / "trainer.out", workdir / "trainer.err"
    started = time.monotonic()
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainer", *TRAINER_ARGS, "--participant", participant],
            stdout=stdout, stderr=stderr, cwd=ROOT,
            env=child_env({"MLFLOW_TRACKING_URI": url, **env}),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while candidates_started(err) < 2:
                assert proc.poll() is None, f"the trainer ended before the fault:\n{err.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "the session never reached its second candidate"
                time.sleep(0.2)
            fault_at = time.monotonic()
            fault()
            recovery = recovered() - fault_at
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    session = Session(proc.returncode, out.read_text(), err.read_text(), recovery, time.monotonic() - started)
    print(
        f"{participant}: exit {session.returncode} after {session.seconds:.0f} s; recovery {recovery:.1f} s"
    )
    return session


def candidates_started(log: Path) -> int:
    """How many candidates the trainer's log (JSON lines, contracts.logs) says it began training."""
    complete = log.read_text().split("\n")[:-1]  # the last one may be half written
    lines = [json.loads(line) for line in complete if line.startswith("{")]
    return sum(1 for ln in lines if ln["logger"] == "trainer.train" and ln["message"].startswith("training "))


def assert_nothing_half_done(url: str, participant: str) -> list[str]:
    """No run left RUNNING; every version this session registered is complete, and so is every
    version an alias names. Returns the run statuses."""
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(participant)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    statuses = [run.info.status for run in runs]
    assert "RUNNING" not in statuses, [(r.info.run_name, r.info.status) for r in runs]
    run_ids = {run.info.run_id for run in runs}
    aliases = {str(v): alias for alias, v in client.get_registered_model(LATENCY).aliases.items()}
    for version in client.search_model_versions(f"name = '{LATENCY}'"):
        mine = version.tags.get("run_id") in run_ids
        if not (mine or str(version.version) in aliases):
            continue
        named = "this session" if mine else f"alias {aliases[str(version.version)]}"
        where = f"{LATENCY} v{version.version} ({named})"
        assert version.description, f"{where} has no description"
        assert version.tags.get("promotion.decision"), f"{where} has no promotion.decision tag"
        assert str(version.version) in aliases, f"{where} has no alias"
    return statuses


def server_errors(log: str) -> int:
    """5xx answers in an MLflow server's access log."""
    return len(re.findall(r'HTTP/1.1" 5\d\d ', log))


def assert_completed(session: Session, url: str, participant: str) -> None:
    assert session.returncode == 0, session.stderr[-4000:]
    statuses = assert_nothing_half_done(url, participant)
    assert set(statuses) == {"FINISHED"}, statuses
    assert f"{'latency_ms'}: best" in session.stdout and "-> v" in session.stdout, session.stdout


def assert_failed_cleanly(session: Session, url: str, participant: str) -> None:
    """Exit 1, one line naming what failed, the session's unfinished runs FAILED, nothing half-done."""
    assert session.returncode == 1, session.stdout[-2000:] + session.stderr[-4000:]
    assert "Traceback" not in session.stderr, session.stderr[-6000:]
    said = [line for line in session.stderr.splitlines() if line.startswith("trainer: error:")]
    assert len(said) == 1, session.stderr[-4000:]
    assert said[0].startswith("trainer: error: the session failed: the tracking server failed "), said
    assert "marked FAILED" in said[0], said
    statuses = assert_nothing_half_done(url, participant)
    assert "FAILED" in statuses, statuses


def test_a_postgres_restart_mid_session_is_survived(platform: Platform, tmp_path: Path) -> None:
    fault = lambda: platform.restart_postgres(down_s=4)  # noqa: E731
    before = server_errors(platform.procs.tail("mlflow", 100000))
    session = train_through(platform.url, fault, platform.answering, tmp_path, "fault-postgres")
    assert_completed(session, platform.url, "fault-postgres")
    # The server answered the session 5xx while its database was down; the client retried them.
    assert server_errors(platform.procs.tail("mlflow", 100000)) > before, "the session never met the restart"


def test_an_outage_beyond_the_retries_fails_the_session_cleanly(platform: Platform, tmp_path: Path) -> None:
    """The server down for longer than the client's retries: one line, runs FAILED, nothing half-done."""
    session = train_through(
        platform.url,
        lambda: platform.restart_mlflow(down_s=8),
        platform.answering,
        tmp_path,
        "fault-outage",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
        TRAINER_CONNECT_ATTEMPTS="30",
    )
    assert_failed_cleanly(session, platform.url, "fault-outage")
