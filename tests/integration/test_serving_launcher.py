"""The serving launcher (`python -m services.serving`) as a real process: it stops promptly on
SIGTERM, also while the tracking server it waits for is unreachable (`docker compose stop` must not
wait for MLflow's minutes of client retries)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from services.local import child_env
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.integration


def test_sigterm_stops_a_launcher_waiting_for_an_unreachable_tracking_server() -> None:
    env = child_env(
        {
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "SERVING_MODEL_NAME": "latency-predictor",
            "SERVING_HOST": "127.0.0.1",
            "SERVING_PORT": str(free_port()),
            "SERVING_POLL_S": "1",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.serving"], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        for line in proc.stderr:  # the launcher says what it waits for
            if "waiting for tracking server" in line:
                break
            assert time.monotonic() < deadline, "the launcher did not report what it waits for"
        time.sleep(3)  # inside MLflow's client retries by now
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - stopped < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
