"""``POST /v1/admin/reload``: a thin route over its serving object (bound when the router is made).

The key check runs as a dependency, so that a server without an API key answers 403 before it reads
the body. The route is in the ``max_in_flight`` lane with classify (rare, and admin-only).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response

from router.service._errors import error_responses
from router.service.admin._protocol import ReloadRefused, ReloadRequest, ReloadResponse
from router.service.admin._serving import AdminServing

PATH = "/v1/admin/reload"


def admin_router(serving: AdminServing) -> APIRouter:
    router = APIRouter()
    responses = error_responses({403: "no API key is configured: admin routes are off",
                                 503: "max_in_flight reached (Retry-After)"})
    responses[409] = {"model": ReloadRefused, "description": "the index was refused (the detail says why); "
                                                             "the old one keeps serving"}

    @router.post(PATH, response_model=ReloadResponse, responses=responses, dependencies=[Depends(serving.allowed)])
    async def reload(body: Annotated[ReloadRequest | None, Body()] = None) -> Response:
        return await serving.reload(body)

    return router
