"""The FastAPI app factory: the lifespan, the endpoint families' routers, the probes, the Guard.

Each endpoint family (``classify/``, ``dispatch/``, ``admin/``, ``learn/``, ``proxy/``) has its protocol models, an
``APIRouter`` that gets its serving object from ``app.state`` by ``Depends``, and its serving logic. Errors map to
statuses in one table (``_errors.py``); limits are the Guard's (``guard.py``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from router._settings import secret
from router.dispatch import Dispatcher
from router.errors import ConfigError
from router.service._errors import install_error_handlers
from router.service._guard import Guard, approver_auth
from router.service._models import HealthResponse, ReadyResponse
from router.service._service import ClassifierService
from router.service.admin._routes import admin_router
from router.service.admin._serving import AdminServing
from router.service.classify._routes import classify_router
from router.service.classify._serving import ClassifyServing
from router.service.dispatch._observe import observe
from router.service.dispatch._routes import not_configured
from router.service.dispatch._routes import router as dispatch_routes
from router.service.dispatch._serving import DispatchServing
from router.service.learn._routes import learn_router
from router.service.learn._serving import LearnServing, LearnTrust
from router.service.proxy._routes import not_configured as proxy_not_configured
from router.service.proxy._routes import router as proxy_routes
from router.service.proxy._serving import ProxyServing

log = logging.getLogger("router.service")


class FastJSON(JSONResponse):
    """JSON through orjson (several times faster than json.dumps)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def create_app(service: ClassifierService, dispatcher: Dispatcher | None = None) -> FastAPI:
    config = service.config
    if config.proxy and dispatcher is None:
        raise ConfigError("proxy is on but no dispatcher was given: the chat routes forward through its chain")
    proxy: ProxyServing | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Tier 2's and the dispatcher's clients live on this loop: opened (warmed) here, closed here.
        await service.start()
        if dispatcher is not None:
            await dispatcher.aopen()
        hangup = _on_sighup(service.schedule_reload)
        yield
        if hangup is not None:
            _ignore_sighup(hangup[0])
        try:
            await service.stop()
            if proxy is not None:
                await proxy.aclose()
            if dispatcher is not None:
                await dispatcher.aclose()  # flushes the state's outbox: a SIGHUP must not cut it
        finally:
            if hangup is not None and hangup[1] is not None:
                signal.signal(*hangup)  # the disposition before serving (a library caller's main thread)
        log.warning("router: drained and stopped")

    app = FastAPI(title="tiered-router", version="0.1.0", lifespan=lifespan, default_response_class=FastJSON)
    install_error_handlers(app, service.metrics)
    # Who the learning routes trust as a person (the credential the Guard finds, never the body's word); the
    # learned-examples log records that credential as `by`, never a secret.
    trust = LearnTrust.of(config)
    if trust.open_to_anyone:
        log.warning("router: --feedback on without --api-key-env: anyone who reaches the port can teach the router "
                    "(POST /v1/feedback%s)", ", as source 'llm' only: source 'human' and the review decisions need "
                    "the approver key" if config.approver_key_env else ", and decide its review queue")
    learnable = service.router.artifact.head_intents  # the intents with examples: those feedback can teach
    families = [classify_router(service.limits, ClassifyServing(service)),
                not_configured if dispatcher is None else dispatch_routes,
                admin_router(AdminServing(service, keyed=bool(config.api_key_env))),
                learn_router(LearnServing(service, trust), service.limits.max_text_chars, learnable)]
    families.append(proxy_routes if config.proxy else proxy_not_configured)
    if dispatcher is not None:
        app.state.dispatch = DispatchServing(service, dispatcher)
        if config.proxy:  # after DispatchServing: its deadlines are the fallback of the proxy's
            app.state.proxy = proxy = ProxyServing(service, dispatcher)
        # A reload protects the intents of the skills that write, as load_router did at start from --skills.
        service.writes = frozenset(skill.name for skill in dispatcher.skills if skill.writes)
    for family in families:
        app.include_router(family)

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

    api_key = None
    if config.api_key_env:
        api_key = secret(config.api_key_env)
        if not api_key:
            raise ConfigError(f"api_key_env={config.api_key_env!r} is set but that environment variable is empty")
    # The metric label of a path is its route's template: the app's own routes and each family's (an
    # included router is one opaque entry of app.routes), so /v1/dispatch is never counted as "other".
    routes = [*app.routes, *(route for family in families for route in family.routes)]
    # Who may approve (and what the trace records as approved_by): refused here without an approver key
    # when a skill writes, unless --allow-self-approval on.
    approver = approver_auth(config, dispatcher, api_key)
    app.state.approved_by = approver.approved_by
    observe(service, dispatcher)  # the dispatcher's trace records and tier 2's breakers, in /metrics
    app.add_middleware(Guard, service=service, api_key=api_key, routes=routes, approver=approver)
    return app


def _on_sighup(reload: Callable[[], None]) -> tuple[int, Any] | None:
    """SIGHUP reloads the index, in this process (each worker of ``--workers N`` gets its own from the
    supervisor). Returns the signal and its disposition before, or None where there is none (Windows) or
    this is not the main thread (a server run in a thread, as the tests do): only the main thread can take
    a signal."""
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is None:
        return None
    before = signal.getsignal(hangup)
    try:
        asyncio.get_running_loop().add_signal_handler(hangup, reload)
    except (ValueError, RuntimeError, NotImplementedError) as exc:
        log.debug("router: SIGHUP not handled here (%s)", exc)
        return None
    return int(hangup), before


def _ignore_sighup(hangup: int) -> None:
    """From the end of serving to the end of the shutdown. Removing the loop's handler puts SIGHUP back to
    its default, which terminates: one arriving then would kill the process while it closes the old
    indexes and flushes the dispatcher's outbox. A reload has nothing to do by then: ignored."""
    asyncio.get_running_loop().remove_signal_handler(hangup)
    signal.signal(hangup, signal.SIG_IGN)
