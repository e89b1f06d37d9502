"""What the orchestrator's routes need, from the app's state (`create_app` puts it there), as
`Annotated` dependencies: a test mounts a router on a bare app and overrides these."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from services.orchestrator import Settings
from services.orchestrator.coordinator import Coordinator


async def get_coordinator(request: Request) -> Coordinator:
    """The coordinator, `app.state.coordinator` (async: an attribute read needs no thread)."""
    coordinator: Coordinator = request.app.state.coordinator
    return coordinator


CoordinatorDep = Annotated[Coordinator, Depends(get_coordinator)]


async def get_settings(coordinator: CoordinatorDep) -> Settings:
    """The orchestrator's settings: the coordinator's."""
    return coordinator.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def known(coordinator: Coordinator, model: str) -> str:
    """`model`, or 404 naming the models the coordinator knows."""
    if model not in coordinator.states:
        raise HTTPException(404, f"unknown model {model!r}: one of {', '.join(coordinator.states)}")
    return model
