"""The HTML pages: the index (GET /), an experiment's report (GET /reports/{experiment}), a session's
(GET /reports/{experiment}/sessions/{run_id}), the leaderboard (GET /leaderboard), and /favicon.ico.
Each is built on request from MLflow (and Prometheus, for the serving figures) and kept for
REPORTS_CACHE_S; a failure is an HTML error page."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts import reports as names
from contracts.errors import error_responses
from services.reports import Settings
from services.reports.build import nav_links
from services.reports.cache import Cache, cached_leaderboard
from services.reports.collect import (
    NotFound,
    experiment_runs,
    load_experiment,
    load_session,
    participant_experiments,
)
from services.reports.report import ENV, render
from services.reports.routes.deps import CacheDep, ClientDep, SettingsDep
from services.reports.serving import WINDOW, read_serving, window_seconds
from services.reports.templates import ERROR, INDEX, LEADERBOARD

log = logging.getLogger(__name__)
router = APIRouter()

# The serving window of a report page: its description gives the form the page accepts (a number and
# a unit). The page checks it itself (`checked_window`), so a wrong one gets the HTML error page that
# names the form, not FastAPI's JSON 422.
Window = Annotated[
    str | None,
    Query(description="the serving window, e.g. 1h or 30m", json_schema_extra={"pattern": WINDOW.pattern}),
]


def html_error(status: int, message: str) -> HTMLResponse:
    return HTMLResponse(ENV.from_string(ERROR).render(status=status, message=message), status)


def page(cache: Cache, key: tuple[str, ...], make: Callable[[], str]) -> HTMLResponse:
    """The page under `key`, from the cache or made now; 404 or 503 as an HTML error page."""
    try:
        return HTMLResponse(cache.get(key, make))
    except NotFound as exc:
        return html_error(404, str(exc))
    except MlflowException as exc:
        log.warning("MLflow failed for %s: %s", key, exc)
        return html_error(503, f"the tracking server did not answer ({exc.error_code})")


def checked_window(window: str | None, settings: Settings) -> str:
    """The window asked for, or REPORTS_WINDOW; ValueError naming the form when malformed."""
    chosen = window or settings.window
    window_seconds(chosen)
    return chosen


def index_entries(client: MlflowClient) -> list[dict[str, Any]]:
    """Each participant's experiment with its sessions, newest first, and their links."""
    experiments = []
    for experiment in participant_experiments(client):
        sessions, _ = experiment_runs(client, experiment)
        sessions.sort(key=lambda s: -s.start_ms)
        experiments.append(
            {
                "name": experiment.name,
                "href": names.report_path(experiment.name),
                "sessions": [
                    {
                        "name": s.run_name,
                        "start_ms": s.start_ms,
                        "href": names.report_path(experiment.name, s.run_id),
                    }
                    for s in sessions
                ],
            }
        )
    return experiments


@router.get("/", response_class=HTMLResponse, summary="Index of reports")
def index(client: ClientDep, cache: CacheDep, settings: SettingsDep) -> HTMLResponse:
    def make() -> str:
        return ENV.from_string(INDEX).render(experiments=index_entries(client), cache_s=settings.cache_s)

    return page(cache, ("index",), make)


@router.get(
    "/reports/{experiment}",
    response_class=HTMLResponse,
    summary="The report of a participant's experiment",
    responses=error_responses({400: "bad window", 404: "no such experiment, or no session in it"}),
)
def experiment_report(
    experiment: str, client: ClientDep, cache: CacheDep, settings: SettingsDep, window: Window = None
) -> Response:
    try:
        chosen = checked_window(window, settings)
    except ValueError as exc:
        return html_error(400, str(exc))

    def make() -> str:
        data = load_experiment(client, experiment)
        return render(data, read_serving(settings.prometheus.url, chosen), nav_links(data)).html

    return page(cache, ("experiment", experiment, chosen), make)


@router.get(
    "/reports/{experiment}/sessions/{run_id}",
    response_class=HTMLResponse,
    summary="The report of one training session",
    responses=error_responses({400: "bad window", 404: "no such session in this experiment"}),
)
def session_report(
    experiment: str,
    run_id: str,
    client: ClientDep,
    cache: CacheDep,
    settings: SettingsDep,
    window: Window = None,
) -> Response:
    try:
        chosen = checked_window(window, settings)
    except ValueError as exc:
        return html_error(400, str(exc))

    def make() -> str:
        data = load_session(client, run_id)
        if data.experiment != experiment:
            raise NotFound(f"session {run_id} is not in experiment {experiment!r}")
        return render(data, read_serving(settings.prometheus.url, chosen), nav_links(data)).html

    return page(cache, ("session", experiment, run_id, chosen), make)


@router.get("/leaderboard", response_class=HTMLResponse, summary="The leaderboard page")
def leaderboard_page(client: ClientDep, cache: CacheDep) -> HTMLResponse:
    def make() -> str:
        return ENV.from_string(LEADERBOARD).render(targets=cached_leaderboard(cache, client))

    return page(cache, ("leaderboard-page",), make)


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    return Response(status_code=204)  # no icon, and no 404 in a browser's console
