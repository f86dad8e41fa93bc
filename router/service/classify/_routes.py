"""``POST /v1/classify``: a thin route; the serving object comes from the app's state by ``Depends``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from router._config import LimitsConfig
from router.service._errors import error_responses
from router.service.classify._protocol import ClassifyRequest, ClassifyResponse, request_model
from router.service.classify._serving import ClassifyServing

_ERRORS = error_responses({503: "max_in_flight reached (Retry-After)"})


def classify_serving(request: Request) -> ClassifyServing:
    serving: ClassifyServing = request.app.state.classify
    return serving


def classify_router(limits: LimitsConfig) -> APIRouter:
    """The classify routes; the body model carries this index's limits, so the OpenAPI schema states them."""
    router = APIRouter()

    async def classify(body: ClassifyRequest,
                       serving: Annotated[ClassifyServing, Depends(classify_serving)]) -> Response:
        return await serving.classify(body)

    body: Any = request_model(limits.max_text_chars, limits.max_batch)
    classify.__annotations__["body"] = body
    router.post("/v1/classify", response_model=ClassifyResponse, responses=_ERRORS)(classify)
    return router
