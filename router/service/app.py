"""The FastAPI app: thin routes over ClassifierService; models in models.py, limits in guard.py."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from router.dispatch import Dispatcher
from router.errors import ConfigError, InputError
from router.service.dispatch_routes import add_dispatch_routes
from router.service.guard import Guard
from router.service.models import (
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    HealthResponse,
    ReadyResponse,
    decision_payload,
    request_model,
)
from router.service.service import ClassifierService

log = logging.getLogger("router.service")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in {
        400: "body is not decodable (e.g. not UTF-8)",
        401: "missing or wrong bearer token",
        408: "body not received within body_timeout_s (the connection is closed)",
        413: "body over max_body_bytes",
        422: "invalid request (the detail names the field)",
        503: "max_in_flight reached (Retry-After)",
        504: "request_timeout_s exceeded",
    }.items()
}


class FastJSON(JSONResponse):
    """JSON through orjson (several times faster than json.dumps for Decision payloads)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def create_app(service: ClassifierService, dispatcher: Dispatcher | None = None) -> FastAPI:
    config = service.config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()
        if dispatcher is not None:
            await asyncio.to_thread(dispatcher.close)
        log.warning("router: drained and stopped")

    app = FastAPI(title="tiered-router", version="0.1.0", lifespan=lifespan, default_response_class=FastJSON)
    app.state.service = service

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> Response:
        return FastJSON({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return FastJSON({"detail": errors}, status_code=422)

    async def classify(body: ClassifyRequest) -> Response:
        if body.text is not None:
            decisions = [await service.classify_one(body.text)]
        else:
            assert body.texts is not None  # one of the two, by ClassifyRequest's validator
            decisions = await service.classify_many(body.texts)
        service.metrics.record(decisions)
        return FastJSON({"decisions": [decision_payload(d, body.top_k) for d in decisions],
                         "session_id": body.session_id})

    # The body model carries this index's limits, so the OpenAPI schema states them.
    limits = service.router.limits
    classify.__annotations__["body"] = request_model(limits.max_text_chars, limits.max_batch)
    app.post("/v1/classify", response_model=ClassifyResponse, responses=_ERRORS)(classify)

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz() -> Response:
        return FastJSON({"status": "ok"})

    @app.get("/readyz", response_model=ReadyResponse,
             responses={503: {"model": ReadyResponse, "description": "warming up, draining, or no LLM reachable"}})
    async def readyz() -> Response:
        ready, detail = await service.readiness()
        return FastJSON({"ready": ready, **detail}, status_code=200 if ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    add_dispatch_routes(app, service, dispatcher)

    api_key = None
    if config.api_key_env:
        api_key = os.environ.get(config.api_key_env)
        if not api_key:
            raise ConfigError(f"api_key_env={config.api_key_env!r} is set but that environment variable is empty")
    app.add_middleware(Guard, service=service, api_key=api_key, routes=app.routes)
    return app
