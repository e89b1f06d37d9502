"""The leaderboard as JSON: GET /api/leaderboard (target -> entries, best first)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from mlflow.exceptions import MlflowException

from contracts.errors import error_body
from services.reports.cache import cached_leaderboard
from services.reports.routes.deps import CacheDep, ClientDep

router = APIRouter()


@router.get("/api/leaderboard", summary="The leaderboard as JSON: target -> entries, best first")
def leaderboard_json(client: ClientDep, cache: CacheDep) -> JSONResponse:
    try:
        board = cached_leaderboard(cache, client)
    except MlflowException as exc:
        return JSONResponse(error_body(503, f"the tracking server did not answer ({exc.error_code})"), 503)
    return JSONResponse({"targets": {t: [e.as_json() for e in entries] for t, entries in board.items()}})
