"""What the reports service's routes need, from the app's state (`create_app` puts it there), as
`Annotated` dependencies: a test mounts a router on a bare app and overrides these."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from mlflow.tracking import MlflowClient
from prometheus_client import CollectorRegistry

from services.reports import Settings
from services.reports.cache import Cache

# Each is async: an attribute read needs no thread.


async def get_settings(request: Request) -> Settings:
    """The service's settings, `app.state.settings`."""
    settings: Settings = request.app.state.settings
    return settings


async def get_client(request: Request) -> MlflowClient:
    """The tracking server's client, `app.state.client`."""
    client: MlflowClient = request.app.state.client
    return client


async def get_cache(request: Request) -> Cache:
    """The pages and the leaderboard kept for REPORTS_CACHE_S, `app.state.cache`."""
    cache: Cache = request.app.state.cache
    return cache


async def get_registry(request: Request) -> CollectorRegistry:
    """The gauges /metrics exports, `app.state.registry`."""
    registry: CollectorRegistry = request.app.state.registry
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientDep = Annotated[MlflowClient, Depends(get_client)]
CacheDep = Annotated[Cache, Depends(get_cache)]
RegistryDep = Annotated[CollectorRegistry, Depends(get_registry)]
