"""The gateway holds to its OpenAPI description: schemathesis with every check, against a real
`python -m services.gateway` on loopback, in front of a real model server speaking MLflow's scoring
protocol and a real MLflow registry (SQLite store), both from tests/gateway_support.py.

What the description allows must be accepted (the requests reach the model server and answer 200),
what it forbids must be refused with a documented 4xx, and every answer must match the documented
status, content type, headers and schema. Bounded: a fixed seed, a few examples per operation.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from contracts.models import MODELS
from contracts.predlog_migrations import apply_schema
from services.local import Processes, wait_http
from tests.conftest import free_port, fresh_database, python_env
from tests.fuzzing import fuzz
from tests.gateway_support import ScoringServer, make_registry, tracking_uri_restored

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, postgres_uri: str) -> Iterator[str]:
    base = tmp_path_factory.mktemp("openapi")
    log = fresh_database(postgres_uri, "gateway_openapi")  # feedback is matched there
    apply_schema(log)
    with tracking_uri_restored():
        registry = make_registry(base)
    server = ScoringServer().start()
    procs = Processes(log_dir=base / "logs")
    port = free_port()
    settings = {
        "GATEWAY_MODELS": ",".join(f"{m.name}={server.url}" for m in MODELS),
        "MLFLOW_TRACKING_URI": registry,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_REFRESH_S": "1",
        "MONITORING_DB_URI": log,
        "GATEWAY_FEEDBACK_WAIT_S": "0",  # the fuzzer's made-up ids: unknown at once
    }
    try:
        proc = procs.start(
            "gateway", [sys.executable, "-m", "services.gateway"], {**python_env(), **settings}
        )
        wait_http(f"http://127.0.0.1:{port}/health", proc, 60, "the gateway")
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop_all()
        server.stop()


def requests_by_status(url: str) -> dict[tuple[str, str], float]:
    """(endpoint, status) -> requests answered, over every model."""
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "gateway_requests_total":
                key = (sample.labels["endpoint"], sample.labels["status"])
                found[key] = found.get(key, 0) + sample.value
    return found


def test_schemathesis_finds_no_failure_and_reaches_the_success_path(gateway: str, tmp_path: Path) -> None:
    fuzz(gateway, tmp_path, max_examples=30)
    answered = requests_by_status(gateway)
    for endpoint in ("predict", "invocations", "feedback"):
        assert answered.get((endpoint, "200"), 0) > 0, f"no {endpoint} request succeeded: {answered}"
    assert not [key for key in answered if key[1].startswith("5")], answered
