"""``POST /v1/chat/completions``, ``POST /v1/messages`` and ``GET /v1/models``: thin, the serving object by
``Depends``. The bodies are read raw: each API's own parser (router/proxy/) answers a bad one in that
API's error format, which a FastAPI body model would answer in its own.

Without ``router serve --proxy`` the routes stay out of the schema, but answer 404 saying how to turn
them on.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from router.service.proxy._serving import ProxyServing

_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "object", "additionalProperties": True}}}}}
_CHAT = {200: {"description": "the answer (application/json), or with stream: true Server-Sent Events "
                              "(text/event-stream); x-router-* headers say what happened",
               "content": {"application/json": {}, "text/event-stream": {}}},
         400: {"description": "bad request (the error names the param)"},
         404: {"description": "unknown model"},
         429: {"description": "a session budget would be exceeded (no model was called)"},
         502: {"description": "every model of the chain failed"},
         503: {"description": "busy, or the shared state unreachable (Retry-After)"}}


async def proxy_serving(request: Request) -> ProxyServing:  # async: a sync one runs on a worker thread
    serving: ProxyServing = request.app.state.proxy
    return serving


Serving = Annotated[ProxyServing, Depends(proxy_serving)]
router = APIRouter()


@router.post("/v1/chat/completions", openapi_extra=_BODY, responses=_CHAT)  # type: ignore[arg-type]
async def chat_completions(request: Request, serving: Serving) -> Response:
    """OpenAI's chat completions: ``model: "auto"`` routes by intent."""
    return await serving.chat_completions(request)


@router.post("/v1/messages", openapi_extra=_BODY, responses=_CHAT)  # type: ignore[arg-type]
async def messages(request: Request, serving: Serving) -> Response:
    """Anthropic's Messages API: ``model: "auto"`` routes by intent."""
    return await serving.messages(request)


@router.get("/v1/models")
async def models(request: Request, serving: Serving) -> Response:
    """``auto`` and the configured models: OpenAI's list, or Anthropic's with an ``anthropic-version`` header."""
    return await serving.models(request)


async def _not_configured(request: Request) -> Response:
    return JSONResponse({"detail": "the proxy is not on: start `router serve --proxy [--model-routing models.yaml]` "
                                   "(or ROUTER_SERVE_PROXY=true)"}, status_code=404)


not_configured = APIRouter()
for _path, _method in (("/v1/chat/completions", "POST"), ("/v1/messages", "POST"), ("/v1/models", "GET")):
    not_configured.add_api_route(_path, _not_configured, methods=[_method], include_in_schema=False)
