"""The gateway's HTTP app (FastAPI; OpenAPI docs at /docs) behind the scoring fast path.

`create_app(settings)` assembles: the gateway's state (`state.Gateway`: the registry poller, the
pooled upstream connections and batching, the recorder, feedback, the scoring request path) in
`app.state`, the routes (routes/models.py: everything under /models; routes/status.py: /health and
/metrics), the error handlers, the OpenAPI description (openapi.py), and `ScoringFastPath`
(scoring.py) in front, which answers the two scoring routes before FastAPI. Every error answer has
the shape of `contracts.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from contracts.errors import install_error_handlers
from contracts.guard import allowed_hosts
from services.gateway import Settings
from services.gateway.auth import ApiKeys
from services.gateway.openapi import complete
from services.gateway.routes import models, status
from services.gateway.scoring import ScoringFastPath
from services.gateway.state import Gateway


def fast_path_problems(app: FastAPI, shadowed: object) -> list[str]:
    """What `app` would apply to the scoring routes that ScoringFastPath skips: middleware and
    dependencies (the route's own, its router's, or given where the router is included). Each must be
    applied in ScoringFastPath / Scoring instead."""
    found = [f"middleware {m.cls.__name__}" for m in app.user_middleware]  # type: ignore[attr-defined]
    if app.router.dependencies:
        found.append("app-wide dependencies")
    # Included routers' routes as FastAPI serves them, with the dependencies of every level.
    for route in iter_route_contexts(app.routes):
        if route.endpoint is shadowed and getattr(route, "dependencies", None):
            found.append(f"dependencies of {route.path}")
    return found


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Refuse what the fast path would skip; start the gateway's background work, wait for the
    models (uvicorn accepts after this), call `app.state.on_ready`; stop it all at shutdown."""
    problems = fast_path_problems(app, models.shadowed)
    if problems:
        raise RuntimeError(
            "ScoringFastPath answers /models/{name}/predict and /invocations before FastAPI, so "
            f"it would skip: {', '.join(problems)}. Apply them in services/gateway/scoring.py."
        )
    gateway: Gateway = app.state.gateway
    await gateway.start()
    await gateway.wait_loaded(gateway.settings.ready_timeout_s)
    if app.state.on_ready is not None:
        app.state.on_ready()
    try:
        yield
    finally:
        await gateway.stop()


def describe(app: FastAPI, settings: Settings, served: list[str]) -> None:
    """Make `app.openapi` FastAPI's description completed with this gateway's facts (openapi.py)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(FastAPI.openapi(app), settings.max_rows, served)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings, on_ready: Callable[[], None] | None = None) -> ScoringFastPath:
    """The gateway: the FastAPI app (its lifespan starts and stops the background work) behind the
    scoring fast path, which takes the two scoring routes before FastAPI's middleware stack."""
    gateway = Gateway(settings)
    keys = ApiKeys(settings.api_keys, settings.api_keys_file, settings.require_api_keys)
    app = FastAPI(
        title="Prediction gateway",
        summary="Validated predictions, MLflow scoring protocol, feedback and monitoring.",
        version="1",
        lifespan=lifespan,
        strict_content_type=False,  # a body without Content-Type is JSON, as on the scoring routes
    )
    app.state.gateway, app.state.api_keys, app.state.on_ready = gateway, keys, on_ready
    app.include_router(models.router)
    app.include_router(status.router)
    install_error_handlers(app)
    describe(app, settings, sorted(gateway.models))
    hosts = allowed_hosts(["gateway", "gateway-listener"], settings.guard.extra_allowed_hosts)
    return ScoringFastPath(app, gateway.scoring, keys, hosts)
