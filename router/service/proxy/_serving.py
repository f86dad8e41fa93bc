"""The proxy routes' serving logic: parse the body in its API's wire format, route and forward it through
the ChatProxy (router/proxy/), answer in the same format, with the x-router-* headers.

Every error is answered in its API's own format (the wire modules' ``error_for``), the body's JSON
included. A stream starts only once its first event came (``ChatProxy.stream``): a refusal before it (a
budget, every model failing) is a proper error response; after it, an upstream failure is the API's
in-stream error event. A streamed answer's cost is not known when its headers go out: the OpenAI
stream's last chunk carries it in ``x_router``; for an Anthropic stream, ``GET /v1/sessions/{id}``
and the trace have it.

The routes run under the dispatch routes' deadline, ``request_timeout_s + dispatch_timeout_s``, until
the response starts; the Guard lifts it for a stream once it has started (a long answer is not cut).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response

from router.dispatch import Dispatcher
from router.errors import BadChatRequest, ProviderError
from router.providers._base import StreamEnd
from router.proxy import _anthropic_wire as anthropic
from router.proxy import _openai_wire as openai
from router.proxy._proxy import ChatProxy, ProxyStream
from router.proxy._request import ProxyRequest
from router.proxy._sse import json_body, new_id
from router.service._service import ClassifierService
from router.service.proxy._protocol import anthropic_models_body, refusal_body
from router.service.proxy._stream import EventStream

log = logging.getLogger("router.service")

PATHS = ("/v1/chat/completions", "/v1/messages")


class ProxyServing:
    def __init__(self, service: ClassifierService, dispatcher: Dispatcher) -> None:
        self.service = service
        self.metrics = service.metrics
        self.proxy = ChatProxy(dispatcher, service.classify_one, service.limits.max_text_chars)
        self.session_header = dispatcher.config.proxy.session_header
        request_s, dispatch_s = service.config.request_timeout_s, dispatcher.config.dispatch_timeout_s
        self.deadline = request_s + dispatch_s
        self.deadline_named = (f"its deadline of {self.deadline:g}s (request_timeout_s={request_s:g} + "
                               f"dispatch_timeout_s={dispatch_s:g})")
        before = service.deadline_for
        service.deadline_for = lambda path: (self.deadline, self.deadline_named) if path in PATHS else before(path)

    async def aclose(self) -> None:
        await self.proxy.aclose()

    # -- the routes ----------------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        return await self._serve(request, "openai")

    async def messages(self, request: Request) -> Response:
        return await self._serve(request, "anthropic")

    async def models(self, request: Request) -> Response:
        ids = self.proxy.model_ids()
        created = int(time.time())
        if "anthropic-version" in request.headers:
            return JSONResponse(anthropic_models_body(ids, created))
        return JSONResponse(openai.models_body(ids, created))

    # -- serving -------------------------------------------------------------------------------------
    async def _serve(self, request: Request, api: str) -> Response:
        kind = "none"
        try:
            parsed = self._parse(api, await request.body())
            routed = await self.proxy.routed(parsed, request.headers.get(self.session_header))
            kind = routed[0].kind  # the metric's route label, also when the call is refused (a budget)
            if parsed.stream:
                stream = await self.proxy.stream(parsed, routed=routed)
                try:
                    response = self._stream(api, parsed, stream)
                except BaseException:
                    # Until the response owns it, nothing else would close it: its concurrency slot,
                    # reservation and breaker probe would stay taken.
                    await stream.aclose()
                    raise
            else:
                answer = await self.proxy.complete(parsed, routed=routed)
                self._count_cost(answer.cost, answer.fallback_from)
                model = answer.model or parsed.model
                if api == "openai":
                    body = openai.completion_body(answer.completion, model=model, id=new_id("chatcmpl-"),
                                                  created=int(time.time()))
                else:
                    body = anthropic.message_body(answer.completion, model=model, id=new_id("msg_"))
                response = Response(json_body(body), media_type="application/json", headers=answer.headers())
        except HTTPException as exc:  # the Guard's, on reading the body: too large (413), too slow (408)
            self.metrics.proxy_requests.labels(api, kind, str(exc.status_code)).inc()
            return JSONResponse(refusal_body(api, exc.status_code, str(exc.detail)), status_code=exc.status_code,
                                headers=exc.headers)
        except Exception as exc:
            status, body, headers = (openai if api == "openai" else anthropic).error_for(exc)
            if status == 500:  # not one of the router's own refusals: a bug, whose body says nothing of it
                log.error("router: proxy %s request failed", api, exc_info=exc)
            self.metrics.proxy_requests.labels(api, kind, str(status)).inc()
            if not isinstance(exc, BadChatRequest):
                self.metrics.dispatch.labels(type(exc).__name__).inc()
            return JSONResponse(body, status_code=status, headers=headers)
        self.metrics.proxy_requests.labels(api, kind, "200").inc()
        return response

    def _parse(self, api: str, raw: bytes) -> ProxyRequest:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadChatRequest(None, f"the request body is not valid JSON: {exc}", "invalid_json") from None
        if api == "openai":
            return openai.parse_chat_request(body, self.proxy.limits)
        return anthropic.parse_messages_request(body, self.proxy.limits)

    def _count_cost(self, cost: Any, fallback_from: str | None) -> None:
        self.metrics.dispatch_cost.inc(float(cost))
        if fallback_from is not None:
            self.metrics.dispatch_fallbacks.inc()

    def _stream(self, api: str, parsed: ProxyRequest, stream: ProxyStream) -> Response:
        model = stream.model or parsed.model
        if api == "openai":
            chunks = self._openai_chunks(stream, openai.OpenAIStream(
                id=new_id("chatcmpl-"), model=model, created=int(time.time()), include_usage=parsed.include_usage))
        else:
            chunks = self._anthropic_chunks(stream, anthropic.AnthropicStream(id=new_id("msg_"), model=model))
        return EventStream(chunks, stream.aclose, stream.headers(cost=False))

    async def _openai_chunks(self, stream: ProxyStream, wire: openai.OpenAIStream) -> AsyncGenerator[bytes, None]:
        yield wire.start()
        try:
            async for event in stream.events():
                if not isinstance(event, StreamEnd):
                    yield wire.event(event)
        except Exception as exc:  # after the first byte: the API's in-stream error, then the end
            status, body, _ = openai.error_for(exc)
            error = body.get("error", {})
            yield wire.error(status, str(error.get("message", exc)), str(error.get("type", "server_error")),
                             error.get("code"))
            self._stream_failed(exc)
            return
        self._count_cost(stream.cost, stream.fallback_from)
        assert stream.completion is not None  # a stream ends with its StreamEnd
        yield wire.end(stream.completion, {"x_router": stream.summary()})

    async def _anthropic_chunks(self, stream: ProxyStream,
                                wire: anthropic.AnthropicStream) -> AsyncGenerator[bytes, None]:
        yield wire.start()
        try:
            async for event in stream.events():
                if not isinstance(event, StreamEnd):
                    yield wire.event(event)
        except Exception as exc:
            _, body, _ = anthropic.error_for(exc)
            error = body.get("error", {})
            yield wire.error(str(error.get("type", "api_error")), str(error.get("message", exc)))
            self._stream_failed(exc)
            return
        self._count_cost(stream.cost, stream.fallback_from)
        assert stream.completion is not None
        yield wire.end(stream.completion)

    def _stream_failed(self, exc: Exception) -> None:
        self.metrics.dispatch.labels(type(exc).__name__).inc()
        if not isinstance(exc, ProviderError):
            log.error("router: a proxied stream failed after its first byte: %r", exc)
