"""OpenTelemetry traces: a span per classify call with one child per tier that ran, and a span per
model-provider attempt (tier 2's and the dispatcher's, both through ``router.providers.Chain``).

Off unless switched on, and then free: ``tracer`` stays None, the hot paths test it once (``if
_telemetry.tracer is None``) and opentelemetry is never imported. ``instrument()`` switches spans on
for this process over a tracer provider (the global one by default); ``configure()`` builds an SDK
provider that exports over OTLP/HTTP and instruments with it (``router serve --otlp-endpoint``, or the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT``). This is the one module that imports opentelemetry, always
inside a function, from the ``[otel]`` extra.

Spans (docs/telemetry.md has the full list of attributes):

- ``router.classify``: one per ``classify``/``aclassify`` call, and one per ``classify_many`` batch
  (``router.batch.size``); a single text's Decision is in its attributes (``router.intent``,
  ``router.tier``, ``router.confidence``, ``router.escalated``...), a batch's in one
  ``router.decision`` event per text, in order.
- ``router.tier.<name>`` (rules, static, embedding, llm): a child of ``router.classify`` for each tier
  that ran, with its real start and end (a compute tier's includes its wait for the encoder).
- ``chat <model>`` (kind CLIENT, GenAI semantic conventions): one per attempt of a chain, skipped
  ones included; a child of whatever span is current (``router.tier.llm`` for tier 2).
- ``POST /v1/...`` (kind SERVER): one per HTTP request of ``router serve``, the parent of the spans
  above, itself a child of the request's W3C ``traceparent`` when it has one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from router._settings import environ
from router.errors import MissingDependency

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.trace import TracerProvider as AnyTracerProvider

    from router._decision import Decision
    from router.providers._base import Completion
    from router.providers._chain import Attempt, Target
    from router.service._config import ServeConfig
    from router.tiers._base import Query, Tier

log = logging.getLogger("router.telemetry")

INSTALL_HINT = "pip install 'tiered-router[otel]'"
DEFAULT_SERVICE_NAME = "tiered-router"
INSTRUMENTATION_SCOPE = "tiered-router"  # the scope of every span: this library, whichever module makes it
TRACES_PATH = "v1/traces"  # what OTLP/HTTP appends to a base endpoint (OTEL_EXPORTER_OTLP_ENDPOINT's rule)

# The hot paths read this and nothing else: None means telemetry is off.
tracer: Tracer | None = None
# The provider ``configure`` built (and so owns: flushed and shut down by ``uninstrument``), with its
# (traces URL, service name), so that configuring again the same way in one process reuses it.
_owned: tuple[TracerProvider, tuple[str, str]] | None = None

# GenAI semantic conventions. The names are written out rather than imported from
# opentelemetry-semantic-conventions, whose gen_ai module is incubating and marks them deprecated
# (moved to the GenAI conventions repository) without a stable replacement yet.
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
ERROR_TYPE = "error.type"
CHAT = "chat"
# gen_ai.provider.name: the convention's well-known value where there is one, else the provider's kind.
WELL_KNOWN_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}

P = ParamSpec("P")
T = TypeVar("T")


def _missing(exc: ModuleNotFoundError) -> MissingDependency:
    return MissingDependency(f"OpenTelemetry needs the [otel] extra ({exc.name} is not installed): {INSTALL_HINT}")


# -- switching it on and off ------------------------------------------------------------------------
def instrument(tracer_provider: AnyTracerProvider | None = None) -> None:
    """Spans on, for this process: classify (one per tier) and every model-provider attempt.

    ``tracer_provider``: where the spans go; None: the global one (``opentelemetry.trace.
    get_tracer_provider()``, e.g. set up by ``opentelemetry-instrument``). Needs opentelemetry-api
    (the ``[otel]`` extra), else ``MissingDependency``.
    """
    global tracer, _owned
    try:
        from opentelemetry import trace
    except ModuleNotFoundError as exc:
        raise _missing(exc) from exc
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    if _owned is not None and provider is not _owned[0]:  # replaced: what ``configure`` built is shut down
        owned, _owned = _owned, None
        owned[0].shutdown()
    tracer = provider.get_tracer(INSTRUMENTATION_SCOPE, _version())


def uninstrument() -> None:
    """Spans off; a provider ``configure`` built is flushed and shut down."""
    global tracer, _owned
    tracer = None
    owned, _owned = _owned, None
    if owned is not None:
        owned[0].shutdown()


def enabled() -> bool:
    return tracer is not None


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a base endpoint (``http://collector:4318``), as the exporter derives it
    from ``OTEL_EXPORTER_OTLP_ENDPOINT``; a URL that already ends in ``/v1/traces`` is kept."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/" + TRACES_PATH) else f"{base}/{TRACES_PATH}"


def configure(endpoint: str, service_name: str | None = None) -> TracerProvider:
    """Export spans over OTLP/HTTP (protobuf) to ``endpoint`` and instrument this process with them.

    ``endpoint``: a base URL (``http://collector:4318``; ``/v1/traces`` is appended) or the full traces
    URL. The SDK provider batches spans (``BatchSpanProcessor``), samples by ``OTEL_TRACES_SAMPLER``
    (default: every trace), reads ``OTEL_EXPORTER_OTLP_HEADERS`` for auth, and flushes at exit; its
    resource names ``service.name`` (``service_name``, else ``OTEL_SERVICE_NAME``, else tiered-router)
    and this process (``process.pid``: one per worker of ``router serve --workers``). Configuring again
    the same way reuses the provider; another way replaces it.
    """
    return _export_to(traces_url(endpoint), service_name)


def _export_to(url: str, service_name: str | None) -> TracerProvider:
    global _owned
    name = service_name or environ("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    if _owned is not None and _owned[1] == (url, name):  # instrumented with it still
        return _owned[0]
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ModuleNotFoundError as exc:
        raise _missing(exc) from exc
    uninstrument()
    resource = Resource.create({"service.name": name, "service.version": _version(), "process.pid": os.getpid()})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    instrument(provider)
    _owned = (provider, (url, name))
    return provider


def serve_traces_url(config: ServeConfig) -> str | None:
    """Where ``router serve`` exports spans: ``--otlp-endpoint`` (a base URL), else the standard variables
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL, used as it is) and ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (a base URL). None: telemetry off. ``OTEL_SDK_DISABLED=true`` switches the variables off, not the flag."""
    if config.otlp_endpoint:
        return traces_url(config.otlp_endpoint)
    if (environ("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return None
    if full := environ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return full
    base = environ("OTEL_EXPORTER_OTLP_ENDPOINT")
    return traces_url(base) if base else None


def configure_from_serve_config(config: ServeConfig) -> bool:
    """Telemetry for one ``router serve`` process (``build_server`` calls it, in each worker: spans are
    exported by the process that makes them). Without an endpoint nothing is set up. True when spans
    are on, configured here or instrumented before (a library user's ``router.instrument()``)."""
    url = serve_traces_url(config)
    if url is None:
        return enabled()
    _export_to(url, config.otel_service_name)
    log.info("router: exporting spans over OTLP/HTTP to %s", url)
    return True


def _version() -> str:
    from router import __version__

    return __version__


# -- classify -------------------------------------------------------------------------------------
@contextmanager
def classify_span(index: Any, queries: Sequence[Query]) -> Iterator[Span | None]:
    """``router.classify`` around one call of the chain, current while it runs (``index``: the
    ``IndexManifest`` serving it)."""
    active = tracer
    if active is None:  # switched off since the caller looked
        yield None
        return
    attributes: dict[str, Any] = {"router.index": index.name, "router.batch.size": len(queries)}
    if index.manifest_sha256:
        attributes["router.index.version"] = index.manifest_sha256[:12]
    with active.start_as_current_span("router.classify", attributes=attributes) as span:
        yield span


def decided(span: Span | None, decisions: list[Decision]) -> list[Decision]:
    """The Decisions on their ``router.classify`` span: a single one in its attributes, a batch's as
    one ``router.decision`` event each (position, then the same attributes), in order."""
    if span is not None and span.is_recording():
        if len(decisions) == 1:
            span.set_attributes(_decision_attributes(decisions[0]))
        else:
            for position, decision in enumerate(decisions):
                span.add_event("router.decision", {"router.position": position, **_decision_attributes(decision)})
    return decisions


def _decision_attributes(d: Decision) -> dict[str, Any]:
    attributes: dict[str, Any] = {"router.tier": d.tier, "router.confidence": float(d.confidence),
                                  "router.escalated": d.escalate, "router.out_of_scope": d.out_of_scope,
                                  "router.accepted": d.accepted}
    if d.intent is not None:
        attributes["router.intent"] = d.intent
    if d.skill is not None:
        attributes["router.skill"] = d.skill
    if d.degraded:
        attributes["router.degraded"] = True
        attributes["router.degraded_reason"] = d.degraded_reason or ""
    return attributes


@contextmanager
def tier_span(tier: Tier, pending: list[Query]) -> Iterator[None]:
    """``router.tier.<name>`` around one tier's turn on the queries still pending; it notes how many
    of them that tier settled."""
    active = tracer
    if active is None:
        yield
        return
    attributes = {"router.tier.kind": tier.kind, "router.batch.size": len(pending)}
    with active.start_as_current_span(f"router.tier.{tier.name}", attributes=attributes) as span:
        yield
        span.set_attribute("router.tier.settled", sum(1 for q in pending if q.done))


def carried(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """``fn`` run in the caller's trace context wherever it is awaited: the sync path's tier 2 runs on
    the SyncBridge's loop, in a thread of its own, where the caller's current span is not current."""
    from opentelemetry import context

    caller = context.get_current()

    async def in_context(*args: P.args, **kwargs: P.kwargs) -> T:
        token = context.attach(caller)
        try:
            return await fn(*args, **kwargs)
        finally:
            context.detach(token)

    return in_context


# -- model-provider attempts ----------------------------------------------------------------------
def provider_name(provider: object, label: str) -> str:
    """``gen_ai.provider.name`` of a provider: the well-known value of its kind (openai, anthropic,
    gcp.gemini), else its kind (vllm, openai_compatible, llama_cpp, memory), else its label."""
    kind = getattr(getattr(provider, "config", None), "kind", None)
    if not isinstance(kind, str):
        # The in-process adapters keep no config: their module is named after their kind.
        module = type(provider).__module__
        kind = module.rpartition("._")[2] if module.startswith("router.providers._") else label
    return WELL_KNOWN_PROVIDERS.get(kind, kind)


def attempt_span(attempt: Attempt, target: Target, provider: object, completion: Completion | None,
                 fallback_from: str | None, meter: object | None) -> None:
    """One span for one attempt of a chain, made when the chain records it (its latency is measured
    there, so the span ends now and starts that long ago). A meter's ``stage``, ``skill`` and
    ``session`` (the dispatcher's) are named too; any attempt that did not answer is an ERROR whose
    ``error.type`` is its status (timeout, rate_limited, circuit_open...)."""
    active = tracer
    if active is None:
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    end = time.time_ns()
    attributes: dict[str, Any] = {
        GEN_AI_OPERATION_NAME: CHAT, GEN_AI_PROVIDER_NAME: provider_name(provider, target.provider),
        GEN_AI_REQUEST_MODEL: target.model, GEN_AI_REQUEST_MAX_TOKENS: target.max_tokens,
        "router.provider": target.provider, "router.attempt": attempt.attempt, "router.status": attempt.status,
    }
    base_url = getattr(getattr(provider, "config", None), "base_url", None)
    if isinstance(base_url, str):
        _server(attributes, base_url)
    if fallback_from is not None:
        attributes["router.fallback_from"] = fallback_from
    usage = completion.usage if completion is not None else None
    if usage is not None:
        # The convention's input tokens include cached ones; Usage.input_tokens excludes them.
        attributes[GEN_AI_USAGE_INPUT_TOKENS] = usage.total - usage.output_tokens
        attributes[GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
        if usage.cached_input_tokens:
            attributes[GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cached_input_tokens
        if usage.cache_write_tokens:
            attributes[GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = usage.cache_write_tokens
        if usage.estimated:
            attributes["router.usage.estimated"] = True
    if completion is not None and attempt.status == "ok":
        attributes[GEN_AI_RESPONSE_MODEL] = completion.model
        if completion.finish_reason:
            attributes[GEN_AI_RESPONSE_FINISH_REASONS] = [completion.finish_reason]
    if meter is not None:
        attributes["router.cost_usd"] = float(attempt.cost)
        for name, key in (("stage", "router.stage"), ("skill", "router.skill"), ("session", GEN_AI_CONVERSATION_ID)):
            value = getattr(meter, name, None)
            if isinstance(value, str):
                attributes[key] = value
    span = active.start_span(f"{CHAT} {target.model}", kind=SpanKind.CLIENT, attributes=attributes,
                             start_time=end - int(attempt.latency_ms * 1_000_000))
    if attempt.status != "ok":
        span.set_attribute(ERROR_TYPE, attempt.status)
        span.set_status(Status(StatusCode.ERROR, attempt.error))
    span.end(end_time=end)


def _server(attributes: dict[str, Any], url: str) -> None:
    parts = urlsplit(url)
    if parts.hostname:
        attributes["server.address"] = parts.hostname
        attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)


# -- the HTTP service -------------------------------------------------------------------------------
Scope = MutableMapping[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# Probes and scrapes: frequent, always the same, and no part of a caller's trace.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class TracingMiddleware:
    """A SERVER span per HTTP request, the parent of the classify and attempt spans the request causes
    (a dispatch's attempts share one trace), and itself a child of the request's W3C trace context
    (``traceparent``, ``tracestate``: the global propagator's, ``OTEL_PROPAGATORS``). Pure ASGI:
    the app's route handlers run in this task, so the span is current in them. Written here because
    the OpenTelemetry ASGI instrumentation is another package, not in the ``[otel]`` extra."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        active = tracer
        if scope["type"] != "http" or active is None or scope.get("path") in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", ())}
        method = scope.get("method", "GET")
        status: list[int] = []

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        attributes = {"http.request.method": method, "url.path": scope.get("path", ""),
                      "url.scheme": scope.get("scheme", "http")}
        with active.start_as_current_span(method, context=propagate.extract(carrier), kind=SpanKind.SERVER,
                                          attributes=attributes) as span:
            try:
                await self.app(scope, receive, sending)
            finally:
                route = getattr(scope.get("route"), "path", None)  # the matched route's template
                if isinstance(route, str):
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                if status:
                    span.set_attribute("http.response.status_code", status[0])
                    if status[0] >= 500:
                        span.set_attribute(ERROR_TYPE, str(status[0]))
                        span.set_status(Status(StatusCode.ERROR))
