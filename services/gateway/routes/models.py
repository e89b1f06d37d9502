"""Everything under /models: POST /models/{name}/predict and /models/{name}/invocations (declared for
the OpenAPI description only: ScoringFastPath answers them), POST /models/{name}/feedback, and
GET /models (the served models). Every error answer has the shape of `contracts.errors`."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse, Response

from contracts.errors import error_body
from services.gateway.openapi import (
    FEEDBACK_ERRORS,
    FeedbackAnswer,
    FeedbackRequest,
    InvocationsAnswer,
    PredictAnswer,
    ServedModelInfo,
    scoring_responses,
)
from services.gateway.routes.deps import GatewayDep

log = logging.getLogger(__name__)
router = APIRouter()

# The path parameter of every /models/{name}/... route; openapi.complete lists the served models.
ModelName = Annotated[str, Path(description="a served model")]


async def shadowed(name: ModelName) -> Response:
    """Only documents a scoring route: ScoringFastPath answers it before FastAPI routes. Reached, it
    fails loudly. It must take no dependencies (app.py's `fast_path_problems` checks)."""
    log.error("POST /models/%s/... reached FastAPI: ScoringFastPath was bypassed", name)
    message = "internal error in the gateway: a scoring route bypassed its fast path (see its log)"
    return JSONResponse(error_body(500, message), 500)


# The request bodies are described by openapi.complete (they depend on GATEWAY_MAX_ROWS).
router.post(
    "/models/{name}/predict",
    summary="Predict for feature records",
    description="Records are checked against the served version (types, finite numbers, ranges, "
    "categories, no missing or unknown columns); a 422 lists every bad field.",
    responses=scoring_responses(PredictAnswer, "model, version, predictions and one request id per record"),
    response_model=None,
)(shadowed)
router.post(
    "/models/{name}/invocations",
    summary="MLflow scoring protocol, checked like predict, then passed to the model server",
    description="Checked like predict. The answer's X-Request-ID header gives the rows the "
    "feedback ids `<X-Request-ID>-<row>`.",
    responses=scoring_responses(InvocationsAnswer, "the model server's answer"),
    response_model=None,
)(shadowed)


@router.post(
    "/models/{name}/feedback",
    summary="Actual values for earlier predictions",
    response_model=FeedbackAnswer,
    responses=FEEDBACK_ERRORS,
)
async def feedback(body: FeedbackRequest, name: ModelName, gateway: GatewayDep) -> FeedbackAnswer | Response:
    model = gateway.models.get(name)
    if model is None:
        gateway.metrics.requests.labels("unknown", "", "feedback", "404").inc()
        message = f"unknown model {name!r}; the models are: {', '.join(sorted(gateway.models))}"
        return JSONResponse(error_body(404, message), 404)
    max_rows = gateway.settings.max_rows
    if len(body.feedback) > max_rows:
        message = f"{len(body.feedback)} feedback items; at most {max_rows} (GATEWAY_MAX_ROWS)"
        return JSONResponse(error_body(413, message), 413)
    return await gateway.feedback(model, body)


@router.get("/models", summary="Served models: version, alias, run id", response_model=list[ServedModelInfo])
async def models(gateway: GatewayDep) -> list[dict[str, Any]]:
    return gateway.describe()
