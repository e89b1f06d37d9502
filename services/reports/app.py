"""The reports service's HTTP app: its routes (`routes/pages.py`: the index, each report page, the
leaderboard page; `routes/api.py`: the leaderboard as JSON; `routes/status.py`: its Prometheus
gauges, /health) with the state they read, the guard, the security headers and the error handlers.
Pages are built on request from MLflow and Prometheus and kept for REPORTS_CACHE_S, so they are
always current within that time."""

from __future__ import annotations

from fastapi import FastAPI
from mlflow.tracking import MlflowClient
from prometheus_client import CollectorRegistry
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.errors import install_error_handlers
from contracts.guard import GuardMiddleware, allowed_hosts
from services.reports import Settings
from services.reports.cache import Cache, cached_leaderboard
from services.reports.metrics import LeaderboardCollector
from services.reports.routes import api, pages, status
from services.reports.templates import SECURITY_HEADERS


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


def create_app(settings: Settings) -> FastAPI:
    client = MlflowClient(settings.mlflow.tracking_uri)
    cache = Cache(settings.cache_s)
    registry = CollectorRegistry()
    registry.register(LeaderboardCollector(lambda: cached_leaderboard(cache, client)))
    app = FastAPI(
        title="mlops reports",
        description="Reports per experiment and session, and the leaderboard (docs/reports.md).",
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings, app.state.client, app.state.cache, app.state.registry = (
        settings,
        client,
        cache,
        registry,
    )
    for area in (pages, api, status):
        app.include_router(area.router)
    install_error_handlers(app)
    app.add_middleware(
        GuardMiddleware, allowed=allowed_hosts(["reports"], settings.guard.extra_allowed_hosts)
    )
    # Outermost (added last): the guard's 400 and 413 answers carry the headers too.
    app.add_middleware(SecurityHeaders)
    return app
