"""The workshop path in a real browser: headless Chromium logged in as a participant, against a real
`mlflow server` (basic-auth, Postgres, artifacts in S3 proxied by the server) after a tiny session.

The checks live in tests/browser.py; tests/stack/test_browser.py runs the same ones against the
compose stack. Screenshots go to $MLOPS_SCREENSHOTS (default /tmp/mlops-screenshots).

A person's first visit (`test_a_fresh_browser_...`): seen failing on the code before issue 21's fix
(2026-12-05), against this module's trained server: the URL `make up` printed then
(`http://127.0.0.1:<port>`, no parameter) opened MLflow's GenAI home with the Assistant panel open,
and `expect_model_training_view` failed after 60 s with `Locator expected to be visible ...
get_by_role("link", name="Model registry", exact=True)`; clicking the experiment showed the GenAI
Overview with the "Detect Issues" pop-up (docs/training.md, "The first screen").

The runs table's first view (issue 21, services/mlflow/app.py RUNS_TABLE): seen failing on
2026-12-05 with RUNS_TABLE_KEY's prefix made wrong (so the script answered no read): after the
click into the experiment, `expect_key_metrics_table` failed after 60 s with `Page URL expected to
be 're.compile('orderByKey=metrics\\.(%60|`)test_rmse(%60|`)')'`, the URL holding MLflow's own
`orderByKey=attributes.start_time`, and no metric column. Restored, the module passed.

Broken once (2026-12-02): with `WORKFLOW_PARAM` dropped from `experiments.experiment_url`,
`check_first_screen` run against this module's trained server failed after 68 s with
`Locator expected to be visible ... get_by_role("heading", name="Runs", exact=True)`: the link
opened the GenAI view, headed "Training runs", with Judges and Datasets in the sidebar. Restored,
the same check passed in 29 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import expect

from contracts import experiments
from services import s3init
from services.access import Report, add_participant, ensure_platform
from services.local import Processes, generated_auth, start_mlflow
from services.s3init.bucket import run as create_bucket
from tests import browser as ui
from tests.conftest import ROOT, S3_ACCESS_KEY, S3_SECRET_KEY, free_port, fresh_database, python_env

pytestmark = pytest.mark.integration
PARTICIPANT = "alice"
# The experiment the platform's first training logs into (.env PARTICIPANT): the trainer account
# writes there, so no participant may take its name; alice reads it, as in tests/stack/test_browser.py.
OPERATOR = "first-training"
BUCKET = "browser-artifacts"
S3_ENV = {  # the S3 test server's one identity (tests/conftest.py)
    "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
    "AWS_DEFAULT_REGION": "us-east-1",
}
# The artifact destination: `s3proxied://` serves every transfer (services/mlflow/proxied_s3.py).
# MLOPS_BROWSER_ARTIFACTS=s3://... puts MLflow's presigned downloads back on (how the download
# check was seen failing once).
DESTINATION = os.environ.get("MLOPS_BROWSER_ARTIFACTS", f"s3proxied://{BUCKET}/mlflow")


@pytest.fixture(scope="module")
def session(
    postgres_uri: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ui.Session]:
    """The tracking server as the stack runs it, a participant, and one tiny session trained into
    the participant's experiment by the platform's trainer account (which registers and promotes)."""
    base = tmp_path_factory.mktemp("browser")
    s3 = {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    os.environ.update(S3_ENV)  # for the bucket only; the trainer and the browser get no S3 settings
    try:
        create_bucket(s3init.Settings.from_env(dict(S3_ENDPOINT_URL=s3_endpoint, S3_BUCKET=BUCKET)))
    finally:
        for key in S3_ENV:
            os.environ.pop(key, None)
    auth = generated_auth(fresh_database(postgres_uri, "mlflow_auth_browser"), base / "auth.env")
    procs = Processes(log_dir=base / "logs")
    try:
        url = start_mlflow(
            procs,
            fresh_database(postgres_uri, "mlflow_browser"),
            base,
            free_port(),
            auth=auth,
            artifacts=DESTINATION,
            extra_env=s3,
            workers=2,
        )
        api = auth.admin_api(url)
        ensure_platform(api, auth.passwords, [OPERATOR])
        alice = add_participant(api, PARTICIPANT, base / "participants", url, Report(), [OPERATOR])
        assert alice.password
        trainer_log = base / "logs" / "trainer.log"
        with trainer_log.open("w") as out:
            trained = subprocess.run(
                [sys.executable, "-m", "trainer", "--participant", OPERATOR,
                 "--n-rows", "1000", "--models", "lr,rf"],
                env={**python_env(), "MLFLOW_TRACKING_URI": url, "MLFLOW_PUBLIC_URL": url,
                     **auth.login("trainer")},
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=1200,
            )  # fmt: skip
        assert trained.returncode == 0, trainer_log.read_text()[-3000:]
        os.environ.update(auth.login("admin"))  # the MlflowClient below reads the login from here
        yield ui.latest_session(MlflowClient(url), url, (PARTICIPANT, alice.password), OPERATOR)
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)
        procs.stop_all()


def test_a_fresh_browser_at_the_printed_url_reaches_everything_by_clicking(
    session: ui.Session, page_as
) -> None:  # type: ignore[no-untyped-def]
    with page_as(session.login) as (page, log):
        ui.check_first_visit(page, session, experiments.home_url(session.ui))
    assert not log.failed_requests, log.failed_requests


def test_the_bare_server_address_opens_on_model_training_too(session: ui.Session, page_as) -> None:  # type: ignore[no-untyped-def]
    """`http://localhost:5000` typed by hand: no parameter, the server's first-visit default."""
    with page_as(session.login) as (page, _):
        page.goto(f"{session.ui}/")
        ui.wait_for_ui(page)
        ui.expect_model_training_view(page)


def test_a_browser_that_chose_genai_keeps_its_choice(session: ui.Session, page_as) -> None:  # type: ignore[no-untyped-def]
    """The default is written only where the browser has no choice of its own."""
    with page_as(session.login) as (page, _):
        page.context.add_init_script(
            'localStorage.setItem("mlflow.workflowType_v1", JSON.stringify("genai"))'
        )
        page.goto(f"{session.ui}/")
        ui.wait_for_ui(page)
        expect(page.get_by_role("link", name="Prompts", exact=True)).to_be_visible()  # GenAI's sidebar


def test_the_first_screen_is_the_runs_table_in_the_model_training_view(session: ui.Session, page_as) -> None:  # type: ignore[no-untyped-def]
    with page_as(session.login) as (page, log):
        ui.check_first_screen(page, session)
        ui.check_experiment_listed(page, session)
        assert not log.failed_requests, log.failed_requests


def test_the_session_links_to_every_candidate(session: ui.Session, page_as) -> None:  # type: ignore[no-untyped-def]
    assert len(session.candidates) == 4  # 2 models x 2 targets
    with page_as(session.login) as (page, _):
        ui.check_candidates_table(page, session)


@pytest.mark.parametrize("target", ["latency_ms", "bandwidth_efficiency"])
def test_compare_shows_mae_rmse_r2_for_both_candidates(session: ui.Session, page_as, target: str) -> None:  # type: ignore[no-untyped-def]
    with page_as(session.login) as (page, _):
        ui.check_compare(page, session, target)


def test_artifacts_list_the_model_and_download_through_the_server(session: ui.Session, page_as) -> None:  # type: ignore[no-untyped-def]
    with page_as(session.login) as (page, log):
        content = ui.check_artifacts_download(page, log, session, "random-forest-latency_ms")
    assert content.startswith(b"PK")  # a skops file is a zip archive


def test_the_registry_shows_both_models_with_versions_and_aliases(session: ui.Session, page_as) -> None:  # type: ignore[no-untyped-def]
    with page_as(session.login) as (page, _):
        ui.check_registry(page, session)
        for name in session.versions:
            ui.check_version_decision(page, session, name)


def test_no_console_errors_on_the_workshop_path(session: ui.Session, page_as) -> None:  # type: ignore[no-untyped-def]
    with page_as(session.login) as (page, log):
        ui.check_first_screen(page, session)
        ui.check_candidates_table(page, session)
        ui.check_compare(page, session, "latency_ms")
    assert not log.console_errors, log.console_errors
    assert not log.failed_requests, log.failed_requests
