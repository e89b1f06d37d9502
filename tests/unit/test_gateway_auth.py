"""API keys on the gateway (services/gateway/auth.py), in-process in front of a real loopback model
server and a real MLflow registry: required once configured, per client, rotated through the key
file without a restart; /health stays open, /metrics moves to the internal port."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.gateway.auth import ApiKeys, parse_keys
from tests.gateway_support import (
    Gateway,
    ScoringServer,
    make_registry,
    records,
    running,
    scoring_server,
    tracking_uri_restored,
)

LATENCY = "latency-predictor"
ALICE, BOB, CAROL = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef", "carol-key-0123456789abcdef"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with tracking_uri_restored():
        yield make_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScoringServer]:
    yield from scoring_server()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway-keys"
    path.write_text(f"# client=key\nbob={BOB}\n")
    return path


@pytest.fixture
def gw(registry: str, upstream: ScoringServer, key_file: Path) -> Iterator[Gateway]:
    env = {"GATEWAY_API_KEYS": f"alice={ALICE}", "GATEWAY_API_KEYS_FILE": str(key_file)}
    with running(registry, {LATENCY: upstream.url}, [LATENCY], **env) as gateway:
        yield gateway


def predict(gw: Gateway, **headers: str) -> int:
    return int(gw.post("predict", {"records": records(1, seed=3)}, headers=headers).status_code)


def test_without_a_key_every_model_post_is_refused_401_naming_the_headers(gw: Gateway) -> None:
    for endpoint, payload in (
        ("predict", {"records": records(1)}),
        ("invocations", {"dataframe_records": records(1)}),
        ("feedback", {"feedback": [{"request_id": "x", "actual": 1.0}]}),
    ):
        answer = gw.post(endpoint, payload)
        assert answer.status_code == 401, (endpoint, answer.text)
        assert answer.json()["error_code"] == "UNAUTHENTICATED"
        assert "Authorization: Bearer" in answer.json()["message"]
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert predict(gw, Authorization="Bearer not-a-key-of-anyone-here") == 401
    assert predict(gw, **{"X-API-Key": ""}) == 401
    assert gw.metric("gateway_unauthenticated_total") == 5


def test_keys_from_the_environment_and_the_file_both_work_and_count_per_client(gw: Gateway) -> None:
    assert predict(gw, Authorization=f"Bearer {ALICE}") == 200
    assert predict(gw, **{"X-API-Key": BOB}) == 200
    assert predict(gw, Authorization=f"bearer {BOB}") == 200  # the scheme is case-insensitive
    assert predict(gw, Authorization=f"Basic {ALICE}") == 401  # only Bearer carries a key
    assert gw.metric("gateway_client_requests_total", client="alice") == 1
    assert gw.metric("gateway_client_requests_total", client="bob") == 2


def test_the_key_file_is_read_again_when_it_changes_revoking_and_adding_keys(
    gw: Gateway, key_file: Path
) -> None:
    assert predict(gw, **{"X-API-Key": BOB}) == 200
    key_file.write_text(f"carol={CAROL}\n")
    stamp = time.time() + 5
    os.utime(key_file, (stamp, stamp))  # a new modification time even within the same tick
    time.sleep(1.1)  # the file is looked at once a second
    assert predict(gw, **{"X-API-Key": BOB}) == 401
    assert predict(gw, **{"X-API-Key": CAROL}) == 200
    assert predict(gw, Authorization=f"Bearer {ALICE}") == 200  # .env keys are unaffected
    # A broken edit keeps the keys read before: it never opens the gateway, nor locks Carol out.
    key_file.write_text("carol\n")
    os.utime(key_file, (stamp + 5, stamp + 5))
    time.sleep(1.1)
    assert predict(gw, **{"X-API-Key": CAROL}) == 200
    assert predict(gw) == 401


def test_health_and_the_description_stay_open_and_metrics_leave_the_public_port(gw: Gateway) -> None:
    assert gw.client.get("/health").status_code == 200
    assert gw.client.get("/openapi.json").status_code == 200
    assert gw.client.get("/models").status_code == 200
    metrics = gw.client.get("/metrics")
    assert metrics.status_code == 404 and "internal metrics port" in metrics.json()["message"]


def test_without_keys_configured_the_gateway_is_open_as_before(
    registry: str, upstream: ScoringServer
) -> None:
    with running(registry, {LATENCY: upstream.url}, [LATENCY]) as gw:
        assert predict(gw) == 200
        assert gw.client.get("/metrics").status_code == 200
        assert gw.metric("gateway_client_requests_total", client="-") == 1
    with running(registry, {LATENCY: upstream.url}, [LATENCY], GATEWAY_REQUIRE_API_KEYS="true") as gw:
        assert predict(gw) == 401  # required with no key configured: nobody gets in


def test_a_key_added_to_an_empty_file_turns_the_requirement_on_and_revoking_it_off(
    registry: str, upstream: ScoringServer, tmp_path: Path
) -> None:
    """What `make gateway-key` does to a running gateway that had no key (make e2e checks it too)."""
    empty = tmp_path / "api-keys"
    empty.write_text("")
    with running(registry, {LATENCY: upstream.url}, [LATENCY], GATEWAY_API_KEYS_FILE=str(empty)) as gw:
        assert predict(gw) == 200
        empty.write_text(f"carol={CAROL}\n")
        time.sleep(1.1)
        assert predict(gw) == 401
        assert predict(gw, **{"X-API-Key": CAROL}) == 200
        empty.write_text("")
        time.sleep(1.1)
        assert predict(gw) == 200


def test_key_lines_are_checked() -> None:
    assert set(parse_keys([f"alice = {ALICE} # comment", "", "# only a comment"], "x").values()) == {"alice"}
    for bad in ("alice", f"={ALICE}", "alice=short"):
        with pytest.raises(ValueError, match="item 1 is not client=key"):
            parse_keys([bad], "GATEWAY_API_KEYS")
    assert not ApiKeys().required
    assert not ApiKeys(path="/nonexistent/keys").required  # no key anywhere: open (loopback only)
    assert ApiKeys(path="/nonexistent/keys", required=True).required
