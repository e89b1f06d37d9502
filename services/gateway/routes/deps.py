"""What the gateway's routes need, from the app's state (`create_app` puts it there), as `Annotated`
dependencies: a test mounts a router on a bare app and overrides these. None of them is used by the
scoring routes (ScoringFastPath answers those before FastAPI)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.gateway.auth import ApiKeys
from services.gateway.state import Gateway

# Each is async: an attribute read needs no thread.


async def get_gateway(request: Request) -> Gateway:
    """Everything this gateway process holds, `app.state.gateway`."""
    gateway: Gateway = request.app.state.gateway
    return gateway


async def get_api_keys(request: Request) -> ApiKeys:
    """The API keys, `app.state.api_keys` (ScoringFastPath checks them on every POST /models/...)."""
    keys: ApiKeys = request.app.state.api_keys
    return keys


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
ApiKeysDep = Annotated[ApiKeys, Depends(get_api_keys)]
