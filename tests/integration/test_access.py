"""Team access against a real `mlflow server --app-name basic-auth` with its store and user store on
PostgreSQL: 401 without a login, participants confined to their own experiment and kept off
`production`, service accounts within their roles, provisioning idempotent, platform names and
other people's experiments refused to new participants."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from contracts.experiments import RETRAINING_EXPERIMENT
from contracts.models import MODEL_NAMES
from services.access import (
    METRICS_SCRAPER,
    AccessError,
    AuthApi,
    Report,
    add_participant,
    ensure_platform,
    remove_participant,
)
from services.local import Processes, ServerAuth, generated_auth, start_mlflow
from services.mlflow.auth_config import AUTH_CACHE_TTL_S
from tests.conftest import free_port, fresh_database
from tests.gateway_support import Postgres

pytestmark = pytest.mark.integration
LATENCY, BANDWIDTH = MODEL_NAMES


@dataclass
class Server:
    url: str
    auth: ServerAuth
    api: AuthApi
    credentials: Path
    logins: dict[str, tuple[str, str]]  # participant -> (user, password)

    def call(self, login: tuple[str, str] | None, method: str, path: str, body: dict | None = None) -> int:
        kwargs = {"params": body} if method == "GET" else {"json": body or {}}
        return requests.request(method, self.url + path, auth=login, timeout=30, **kwargs).status_code

    def account(self, name: str) -> tuple[str, str]:
        env = self.auth.login(name)
        return env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]


@pytest.fixture(scope="module")
def server(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("access")
    auth = generated_auth(fresh_database(postgres_uri, "mlflow_auth"), base / "auth.env")
    procs = Processes(log_dir=base / "logs")
    try:
        url = start_mlflow(procs, fresh_database(postgres_uri, "mlflow_access"), base, free_port(), auth=auth)
        api = auth.admin_api(url)
        ensure_platform(api, auth.passwords, ["platform-exp"])
        logins = {}
        for name in ("alice", "bob", "carol"):
            new = add_participant(api, name, base / "participants", url, Report())
            assert new.password and new.credentials
            assert new.credentials.stat().st_mode & 0o777 == 0o600
            logins[name] = (name, new.password)
        yield Server(url, auth, api, base / "participants", logins)
    finally:
        procs.stop_all()


def _run_in(server: Server, login: tuple[str, str], experiment: str) -> str:
    experiment_id = server.api.experiment_id(experiment, create=False)
    answer = requests.post(
        f"{server.url}/api/2.0/mlflow/runs/create",
        auth=login,
        json={"experiment_id": experiment_id},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["run"]["info"]["run_id"])


def _a_version(server: Server, name: str) -> str:
    """A version of `name` registered by the trainer account (the platform's path)."""
    trainer = server.account("trainer")
    run_id = _run_in(server, trainer, "platform-exp")
    answer = requests.post(
        f"{server.url}/api/2.0/mlflow/model-versions/create",
        auth=trainer,
        json={"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["model_version"]["version"])


def test_every_read_and_write_without_a_login_gets_401(server: Server) -> None:
    assert server.call(None, "GET", "/api/2.0/mlflow/experiments/search", {"max_results": 5}) == 401
    assert server.call(None, "POST", "/api/2.0/mlflow/experiments/create", {"name": "anon"}) == 401
    assert server.call(None, "GET", "/api/2.0/mlflow/registered-models/get", {"name": LATENCY}) == 401
    assert server.call(None, "GET", "/metrics") == 401
    ui = requests.get(server.url + "/", timeout=30)  # the UI asks for a login
    assert ui.status_code == 401 and ui.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(server.url + "/health", timeout=30).status_code == 200
    wrong = ("alice", "not-her-password-at-all")
    assert server.call(wrong, "GET", "/api/2.0/mlflow/experiments/search", {"max_results": 5}) == 401


def test_participants_read_each_other_but_write_only_their_own(server: Server) -> None:
    alice, bob = server.logins["alice"], server.logins["bob"]
    bob_run = _run_in(server, bob, "bob")
    assert server.call(alice, "GET", "/api/2.0/mlflow/runs/get", {"run_id": bob_run}) == 200
    tag = {"run_id": bob_run, "key": "k", "value": "v"}
    assert server.call(alice, "POST", "/api/2.0/mlflow/runs/set-tag", tag) == 403
    assert server.call(alice, "POST", "/api/2.0/mlflow/runs/delete", {"run_id": bob_run}) == 403
    bob_id = server.api.experiment_id("bob", create=False)
    assert server.call(alice, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": bob_id}) == 403
    assert server.call(bob, "POST", "/api/2.0/mlflow/runs/set-tag", tag) == 200
    _run_in(server, alice, "alice")  # her own experiment: MANAGE


def test_participants_cannot_move_production_but_the_platform_can(server: Server) -> None:
    version = _a_version(server, LATENCY)
    alias = {"name": LATENCY, "alias": "production", "version": version}
    path = "/api/2.0/mlflow/registered-models/alias"
    for name in ("alice", "bob"):
        assert server.call(server.logins[name], "POST", path, alias) == 403
        assert server.call(server.logins[name], "POST", path, {**alias, "alias": "staging"}) == 403
        assert (
            server.call(
                server.logins[name], "GET", "/api/2.0/mlflow/registered-models/get", {"name": LATENCY}
            )
            == 200
        )
    assert server.call(server.account("trainer"), "POST", path, alias) == 200  # the gate's account
    assert server.call(server.account("orchestrator"), "POST", path, alias) == 200  # rollback
    assert (
        server.call(server.logins["alice"], "DELETE", path, {"name": LATENCY, "alias": "production"}) == 403
    )


def test_service_accounts_stay_within_their_roles(server: Server) -> None:
    version = _a_version(server, BANDWIDTH)
    experiment_id = server.api.experiment_id("platform-exp", create=False)
    alias = {"name": BANDWIDTH, "alias": "production", "version": version}
    for account in ("serving", "gateway", "monitor", "reports"):  # readers
        login = server.account(account)
        assert server.call(login, "GET", "/api/2.0/mlflow/registered-models/get", {"name": BANDWIDTH}) == 200
        assert (
            server.call(login, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id}) == 403
        )
        assert server.call(login, "GET", "/metrics") == 403
        # Readers: no alias moves, no tags, no versions, no deletions.
        assert server.call(login, "POST", "/api/2.0/mlflow/registered-models/alias", alias) == 403
        assert server.call(login, "DELETE", "/api/2.0/mlflow/registered-models/alias", alias) == 403
        tag = {"name": BANDWIDTH, "key": "note", "value": version}
        assert server.call(login, "POST", "/api/2.0/mlflow/registered-models/set-tag", tag) == 403
        new_version = {"name": BANDWIDTH, "source": "mlflow-artifacts:/elsewhere"}
        assert server.call(login, "POST", "/api/2.0/mlflow/model-versions/create", new_version) == 403
        delete = {"name": BANDWIDTH}
        assert server.call(login, "DELETE", "/api/2.0/mlflow/registered-models/delete", delete) == 403
    trainer = server.account("trainer")  # no deleting versions or models either
    assert (
        server.call(trainer, "DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": BANDWIDTH}) == 403
    )


def test_metrics_answers_the_prometheus_account_which_is_no_admin(server: Server) -> None:
    """The platform's app admits the scrape account on GET /metrics (services/mlflow/app.py); it is
    a plain user with no grants, refused everything else; everyone else gets 403 there."""
    prometheus = server.account(METRICS_SCRAPER)
    assert not server.api.is_admin(METRICS_SCRAPER)
    assert server.api.grants(METRICS_SCRAPER) == {}
    answer = requests.get(server.url + "/metrics", auth=prometheus, timeout=30)
    assert answer.status_code == 200 and "mlflow_http_request_total" in answer.text
    new_user = {"username": "intruder", "password": "a-long-enough-password"}
    assert server.call(prometheus, "POST", "/api/2.0/mlflow/users/create", new_user) == 403
    admin = {"username": METRICS_SCRAPER, "is_admin": True}
    assert server.call(prometheus, "PATCH", "/api/2.0/mlflow/users/update-admin", admin) == 403
    password = {"username": "alice", "password": "a-long-enough-password"}
    assert server.call(prometheus, "PATCH", "/api/2.0/mlflow/users/update-password", password) == 403
    tag = {"name": LATENCY, "key": "note", "value": "scraped"}
    assert server.call(prometheus, "POST", "/api/2.0/mlflow/registered-models/set-tag", tag) == 403
    assert server.call(prometheus, "GET", "/api/2.0/mlflow/registered-models/get", {"name": LATENCY}) == 403
    experiment = {"experiment_id": server.api.experiment_id("platform-exp", create=False)}
    assert server.call(prometheus, "GET", "/api/2.0/mlflow/experiments/get", experiment) == 403
    assert server.call(prometheus, "POST", "/api/2.0/mlflow/runs/create", experiment) == 403
    assert server.call(server.logins["alice"], "GET", "/metrics") == 403
    assert server.call(server.account("trainer"), "GET", "/metrics") == 403
    assert server.call(None, "GET", "/metrics") == 401
    assert server.call((METRICS_SCRAPER, "not-its-password-at-all"), "GET", "/metrics") == 401


def test_an_older_platforms_admin_scraper_is_demoted_once(server: Server) -> None:
    """Platforms before this change made the scrape account an admin: `create-accounts` takes that
    away (users/update-admin), and a second run changes nothing."""
    server.api.set_admin(METRICS_SCRAPER, True)
    assert server.api.is_admin(METRICS_SCRAPER)
    report = ensure_platform(server.api, server.auth.passwords, ["platform-exp"])
    assert report.lines == [f"service account {METRICS_SCRAPER}: no longer an admin"]
    assert not server.api.is_admin(METRICS_SCRAPER)
    time.sleep(AUTH_CACHE_TTL_S + 1)  # the server caches users for this long
    prometheus = server.account(METRICS_SCRAPER)
    new_user = {"username": "intruder", "password": "a-long-enough-password"}
    assert server.call(prometheus, "POST", "/api/2.0/mlflow/users/create", new_user) == 403
    assert server.call(prometheus, "GET", "/metrics") == 200
    assert ensure_platform(server.api, server.auth.passwords, ["platform-exp"]).lines == []


def test_provisioning_twice_changes_nothing(server: Server) -> None:
    again = ensure_platform(server.api, server.auth.passwords, ["platform-exp"])
    assert again.lines == []
    report = Report()
    for name in server.logins:
        assert not add_participant(server.api, name, server.credentials, server.url, report).created
    assert report.lines == []
    for login in server.logins.values():  # passwords unchanged
        assert server.call(login, "GET", "/api/2.0/mlflow/experiments/search", {"max_results": 5}) == 200


def test_a_removed_participant_gets_401(server: Server) -> None:
    carol = server.logins["carol"]
    assert server.call(carol, "GET", "/api/2.0/mlflow/experiments/search", {"max_results": 5}) == 200
    assert remove_participant(server.api, "carol", server.credentials)
    assert not (server.credentials / "carol.env").exists()
    deadline = time.monotonic() + AUTH_CACHE_TTL_S + 2  # the server's credential cache
    while (
        status := server.call(carol, "GET", "/api/2.0/mlflow/experiments/search", {"max_results": 5})
    ) != 401:
        assert time.monotonic() < deadline, f"a removed participant still gets {status}"
        time.sleep(0.5)
    assert not remove_participant(server.api, "carol", server.credentials)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (RETRAINING_EXPERIMENT, "reserved: the experiment of the orchestrator's retrained production models"),
        ("trainer", "reserved: a service account"),
        ("admin", "reserved: the tracking server's admin login"),
        (LATENCY, "reserved: a registered model"),
        ("platform-exp", "reserved: the operator's experiment"),
    ],
)
def test_platform_names_are_refused(server: Server, name: str, why: str) -> None:
    with pytest.raises(AccessError, match=why):
        add_participant(server.api, name, server.credentials, server.url, Report(), ["platform-exp"])
    assert not server.api.user_exists(name) or name in ("trainer", "admin")
    assert not (server.credentials / f"{name}.env").exists()


def test_a_platform_experiment_is_refused_even_when_not_configured(server: Server) -> None:
    """The trainer account holds a grant on the operator's experiment: it belongs to someone else,
    whatever the settings passed say."""
    with pytest.raises(AccessError, match="'platform-exp' .* already exists and belongs to trainer"):
        add_participant(server.api, "platform-exp", server.credentials, server.url, Report())
    assert not server.api.user_exists("platform-exp")


def test_an_existing_experiment_of_someone_else_is_refused(server: Server) -> None:
    """Any user may create experiments (and MANAGE them): bob made one named like a new participant."""
    bob = server.logins["bob"]
    created = requests.post(
        f"{server.url}/api/2.0/mlflow/experiments/create", auth=bob, json={"name": "dave"}, timeout=30
    )
    assert created.status_code == 200, created.text
    with pytest.raises(
        AccessError, match=r"the experiment 'dave' \(id \d+\) already exists and belongs to bob"
    ):
        add_participant(server.api, "dave", server.credentials, server.url, Report())
    assert not server.api.user_exists("dave")
    assert not (server.credentials / "dave.env").exists()


def test_a_participant_re_added_keeps_their_experiment(server: Server) -> None:
    """`make up` re-applies the roster: an existing participant passes, however their experiment is
    shared; a removed participant's experiment (nobody holds it any more) is theirs again."""
    report = Report()
    again = add_participant(server.api, "alice", server.credentials, server.url, report, ["platform-exp"])
    assert not again.created and report.lines == []
    first = add_participant(server.api, "erin", server.credentials, server.url, Report())
    assert first.created
    assert remove_participant(server.api, "erin", server.credentials)
    back = add_participant(server.api, "erin", server.credentials, server.url, Report())
    assert back.created and back.password != first.password
    erin = server.api.experiment_id("erin", create=False)
    assert erin is not None and server.api.grants("erin")[("experiment", erin)] == "MANAGE"


def test_a_login_is_503_not_401_while_the_user_store_is_down(tmp_path: Path) -> None:
    """Postgres (both stores) stopped: a correct login that is not in the credential cache gets 503,
    which clients retry (the trainer's MLflow client does, for minutes), and not 401, which they
    must not retry; back up, it is 200 again. A wrong password is 401 whenever the store answers.
    (MLflow's user store turns the database error into TEMPORARILY_UNAVAILABLE before its own
    "wrong password" branch sees it: this pins that, since a 401 here would end training sessions.)"""
    postgres = Postgres(tmp_path / "postgres")
    procs = Processes(log_dir=tmp_path / "logs")
    uri = postgres.dsn.replace("postgresql://", "postgresql+psycopg2://")
    try:
        auth = generated_auth(fresh_database(uri, "auth_store"), tmp_path / "auth.env")
        url = start_mlflow(procs, fresh_database(uri, "tracking_store"), tmp_path, free_port(), auth=auth)
        ensure_platform(auth.admin_api(url), auth.passwords, [])
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        trainer, orchestrator = (auth.login(a) for a in ("trainer", "orchestrator"))
        login = trainer["MLFLOW_TRACKING_USERNAME"], trainer["MLFLOW_TRACKING_PASSWORD"]
        unused = orchestrator["MLFLOW_TRACKING_USERNAME"], orchestrator["MLFLOW_TRACKING_PASSWORD"]
        assert requests.get(search, auth=login, timeout=30).status_code == 200
        assert requests.get(search, auth=(login[0], "not-the-password"), timeout=30).status_code == 401
        postgres.stop()
        answer = requests.get(search, auth=unused, timeout=60)  # never seen: not in the cache
        assert answer.status_code == 503, answer.text
        assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE", answer.text
        postgres.start()
        deadline = time.monotonic() + 30
        while (status := requests.get(search, auth=unused, timeout=30).status_code) != 200:
            assert status == 503 and time.monotonic() < deadline, status
            time.sleep(0.5)
        assert requests.get(search, auth=(unused[0], "not-the-password"), timeout=30).status_code == 401
    finally:
        procs.stop_all()
        postgres.procs.stop_all()
