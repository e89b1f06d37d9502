"""The reports service's HTTP API: the index, each report page, the leaderboard (HTML and JSON),
its Prometheus gauges, /health. Pages are built on request from MLflow and Prometheus and kept for
REPORTS_CACHE_S, so they are always current within that time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts import reports as names
from contracts.errors import error_body, error_responses, install_error_handlers
from contracts.guard import GuardMiddleware, allowed_hosts
from services.reports import Settings
from services.reports.build import nav_links
from services.reports.collect import (
    NotFound,
    experiment_runs,
    load_experiment,
    load_session,
    participant_experiments,
)
from services.reports.leaderboard import Entry, read_leaderboard
from services.reports.report import ENV, render
from services.reports.serving import WINDOW, read_serving, window_seconds
from services.reports.templates import ERROR, INDEX, LEADERBOARD, SECURITY_HEADERS

log = logging.getLogger(__name__)
T = TypeVar("T")


class Cache:
    """Values by key for `ttl_s` seconds; one computation per key at a time (a page may use another
    key while it is computed: the leaderboard page uses the leaderboard)."""

    def __init__(self, ttl_s: float, size: int = 256) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._values: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: tuple[str, ...], compute: Callable[[], T]) -> T:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            hit = self._values.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]  # type: ignore[no-any-return]
            value = compute()
            with self._guard:
                self._values[key] = (time.monotonic(), value)
                while len(self._values) > self.size:
                    oldest = next(iter(self._values))
                    self._values.pop(oldest)
                    self._locks.pop(oldest, None)
            return value


class LeaderboardCollector(Collector):
    """The leaderboard as gauges, read from the cached leaderboard at each scrape."""

    def __init__(self, read: Callable[[], dict[str, list[Entry]]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        metric = GaugeMetricFamily(
            "mlops_leaderboard_test_metric",
            "Test metric of each participant's best candidate per target.",
            labels=["participant", "target", "model", "metric"],
        )
        rank = GaugeMetricFamily(
            "mlops_leaderboard_rank", "Rank by test RMSE (1 is best).", labels=["participant", "target"]
        )
        runs = GaugeMetricFamily(
            "mlops_leaderboard_runs",
            "Candidate runs per participant and target.",
            labels=["participant", "target"],
        )
        cpu = GaugeMetricFamily(
            "mlops_leaderboard_cpu_seconds",
            "Training CPU seconds of the best candidate.",
            labels=["participant", "target"],
        )
        last = GaugeMetricFamily(
            "mlops_leaderboard_last_run_timestamp_seconds",
            "Unix time of the last candidate run.",
            labels=["participant", "target"],
        )
        up = GaugeMetricFamily("mlops_leaderboard_up", "1 when the last leaderboard read from MLflow worked.")
        try:
            board = self.read()
        except Exception as exc:  # a scrape must answer; the gauge says the read failed
            log.warning("leaderboard for /metrics failed: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for target, entries in board.items():
            for i, e in enumerate(entries, start=1):
                for key in ("test_mae", "test_rmse", "test_r2"):
                    value = getattr(e, key)
                    if value is not None:
                        metric.add_metric([e.participant, target, e.model, key], value)
                rank.add_metric([e.participant, target], i)
                runs.add_metric([e.participant, target], e.runs)
                if e.cpu_seconds is not None:
                    cpu.add_metric([e.participant, target], e.cpu_seconds)
                last.add_metric([e.participant, target], e.last_run_ms / 1000)
        yield from (metric, rank, runs, cpu, last, up)


def html_error(status: int, message: str) -> HTMLResponse:
    return HTMLResponse(ENV.from_string(ERROR).render(status=status, message=message), status)


class SecurityHeaders:
    """Every answer carries `SECURITY_HEADERS` (the pages' Content-Security-Policy, nosniff, no
    framing, no referrer): the pages, the error pages and the JSON alike."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


# The serving window of a report page: its description gives the form the page accepts (a number and
# a unit). The page checks it itself (`checked_window`), so a wrong one gets the HTML error page that
# names the form, not FastAPI's JSON 422.
WINDOW_QUERY = Query(
    None, description="the serving window, e.g. 1h or 30m", json_schema_extra={"pattern": WINDOW.pattern}
)


def create_app(settings: Settings) -> FastAPI:
    client = MlflowClient(settings.mlflow.tracking_uri)
    cache = Cache(settings.cache_s)
    app = FastAPI(
        title="mlops reports",
        description="Reports per experiment and session, and the leaderboard (docs/reports.md).",
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(
        GuardMiddleware, allowed=allowed_hosts(["reports"], settings.guard.extra_allowed_hosts)
    )
    # Outermost (added last): the guard's 400 and 413 answers carry the headers too.
    app.add_middleware(SecurityHeaders)

    def leaderboard() -> dict[str, list[Entry]]:
        return cache.get(("leaderboard",), lambda: read_leaderboard(client))

    registry = CollectorRegistry()
    registry.register(LeaderboardCollector(leaderboard))

    def page(key: tuple[str, ...], make: Callable[[], str]) -> HTMLResponse:
        try:
            return HTMLResponse(cache.get(key, make))
        except NotFound as exc:
            return html_error(404, str(exc))
        except MlflowException as exc:
            log.warning("MLflow failed for %s: %s", key, exc)
            return html_error(503, f"the tracking server did not answer ({exc.error_code})")

    def checked_window(window: str | None) -> str:
        chosen = window or settings.window
        window_seconds(chosen)  # ValueError -> 400 below
        return chosen

    @app.get("/", response_class=HTMLResponse, summary="Index of reports")
    def index() -> HTMLResponse:
        def make() -> str:
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
            return ENV.from_string(INDEX).render(experiments=experiments, cache_s=settings.cache_s)

        return page(("index",), make)

    @app.get(
        "/reports/{experiment}",
        response_class=HTMLResponse,
        summary="The report of a participant's experiment",
        responses=error_responses({400: "bad window", 404: "no such experiment, or no session in it"}),
    )
    def experiment_report(experiment: str, window: str | None = WINDOW_QUERY) -> Response:
        try:
            chosen = checked_window(window)
        except ValueError as exc:
            return html_error(400, str(exc))

        def make() -> str:
            data = load_experiment(client, experiment)
            return render(data, read_serving(settings.prometheus.url, chosen), nav_links(data)).html

        return page(("experiment", experiment, chosen), make)

    @app.get(
        "/reports/{experiment}/sessions/{run_id}",
        response_class=HTMLResponse,
        summary="The report of one training session",
        responses=error_responses({400: "bad window", 404: "no such session in this experiment"}),
    )
    def session_report(experiment: str, run_id: str, window: str | None = WINDOW_QUERY) -> Response:
        try:
            chosen = checked_window(window)
        except ValueError as exc:
            return html_error(400, str(exc))

        def make() -> str:
            data = load_session(client, run_id)
            if data.experiment != experiment:
                raise NotFound(f"session {run_id} is not in experiment {experiment!r}")
            return render(data, read_serving(settings.prometheus.url, chosen), nav_links(data)).html

        return page(("session", experiment, run_id, chosen), make)

    @app.get("/leaderboard", response_class=HTMLResponse, summary="The leaderboard page")
    def leaderboard_page() -> HTMLResponse:
        return page(("leaderboard-page",), lambda: ENV.from_string(LEADERBOARD).render(targets=leaderboard()))

    @app.get("/api/leaderboard", summary="The leaderboard as JSON: target -> entries, best first")
    def leaderboard_json() -> JSONResponse:
        try:
            board = leaderboard()
        except MlflowException as exc:
            return JSONResponse(
                error_body(503, f"the tracking server did not answer ({exc.error_code})"), 503
            )
        return JSONResponse({"targets": {t: [e.as_json() for e in entries] for t, entries in board.items()}})

    @app.get("/metrics", summary="Prometheus gauges of the leaderboard", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # no icon, and no 404 in a browser's console

    @app.get("/health", summary="Liveness")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
