"""The workshop path in headless Chromium against the compose stack, logged in as a participant
(`make participant`): the same checks as tests/integration/test_browser.py (tests/browser.py), on
the session `make up` trained into the PARTICIPANT experiment. Screenshots go to $MLOPS_SCREENSHOTS."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from contracts import experiments
from contracts.envfile import read_env_file
from tests import browser as ui
from tests.stack.stack import ENV, ENV_FILE, MLFLOW, REPORTS, ROOT

PARTICIPANT = "e2e-browser"


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ui.Session]:
    """A participant's login (added as `make participant` does, removed after) and the latest
    session in the experiment `make up` trained."""
    credentials = tmp_path_factory.mktemp("participants")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env["ACCESS_CREDENTIALS_DIR"] = str(credentials)
    add = [sys.executable, "-m", "services.access", "--env-file", str(ENV_FILE), "add", PARTICIPANT]
    done = subprocess.run(add, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    login = read_env_file(Path(credentials) / f"{PARTICIPANT}.env")
    user = (login["MLFLOW_TRACKING_USERNAME"], login["MLFLOW_TRACKING_PASSWORD"])
    try:
        yield ui.latest_session(MlflowClient(MLFLOW), MLFLOW, user, ENV["PARTICIPANT"])
    finally:
        remove = [*add[:-2], "remove", PARTICIPANT]
        subprocess.run(remove, cwd=ROOT, env=env, capture_output=True, timeout=120)


def test_a_fresh_browser_at_the_printed_url_reaches_everything_by_clicking(
    session: ui.Session, page_as
) -> None:  # type: ignore[no-untyped-def]
    """The MLflow link `make up` printed (infra/stack.py `next_steps`), a fresh browser, only clicks."""
    with page_as(session.login) as (page, log):
        ui.check_first_visit(page, session, experiments.home_url(MLFLOW))
    assert not log.failed_requests, log.failed_requests


def test_the_first_screen_is_the_runs_table_in_the_model_training_view(session: ui.Session, page_as) -> None:  # type: ignore[no-untyped-def]
    with page_as(session.login) as (page, log):
        ui.check_first_screen(page, session)
        ui.check_experiment_listed(page, session)
        assert not log.failed_requests, log.failed_requests


def test_the_session_links_to_every_candidate(session: ui.Session, page_as) -> None:  # type: ignore[no-untyped-def]
    with page_as(session.login) as (page, _):
        ui.check_candidates_table(page, session)


@pytest.mark.parametrize("target", ["latency_ms", "bandwidth_efficiency"])
def test_compare_shows_mae_rmse_r2_for_both_candidates(session: ui.Session, page_as, target: str) -> None:  # type: ignore[no-untyped-def]
    with page_as(session.login) as (page, _):
        ui.check_compare(page, session, target)


def test_artifacts_list_the_model_and_download_through_the_server(session: ui.Session, page_as) -> None:  # type: ignore[no-untyped-def]
    """In the stack the S3 endpoint is a container name: a presigned URL would not even resolve."""
    with page_as(session.login) as (page, log):
        content = ui.check_artifacts_download(page, log, session, "random-forest-latency_ms")
    assert content.startswith(b"PK")


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


def test_the_report_and_leaderboard_draw_every_plot_without_console_errors(
    session: ui.Session, page_as
) -> None:  # type: ignore[no-untyped-def]
    with page_as(session.login) as (page, log):
        plots = ui.check_report_pages(page, REPORTS, ENV["PARTICIPANT"])
    assert len(plots) >= 4, plots
    assert not log.console_errors, log.console_errors
    assert not log.failed_requests, log.failed_requests
    assert log.origins == {REPORTS}, log.origins  # self-contained: nothing loaded from elsewhere
