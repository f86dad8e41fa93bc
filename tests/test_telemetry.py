"""OpenTelemetry spans (router/_telemetry.py), asserted with the SDK's own in-memory exporter.

Classify: one ``router.classify`` span per call with one child per tier that ran; every provider
attempt (tier 2's, the dispatcher's): a CLIENT span with the GenAI attributes; the HTTP service: a
SERVER span per request, the child of its ``traceparent``; ``router serve --otlp-endpoint``: real
OTLP/HTTP protobuf to a real local HTTP server. Off (the default): no span, no opentelemetry import.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import router
from router import Router, _telemetry
from router.errors import ConfigError
from router.llm import LLMConfig
from router.service import ServeConfig
from router.service._config import load_serve_config
from router.testing import ServeProcess
from tests.dispatch.conftest import Harness, fakes, harness  # noqa: F401 - fixtures
from tests.llm.conftest import BrokenProvider
from tests.service.conftest import Running, start_server  # noqa: F401 - fixtures

RULE = "please wire 25.50 usd to maria"  # tier 0 (tests/test_router.py)
STATIC = "what is the balance of my bank account"  # tier 1a (tests/test_static.py)
EMBEDDING = "who painted the sistine chapel ceiling"  # passed on by 1a, found out of scope by 1b
ESCALATED = "what about my money"  # tier 1 is not sure of it (tests/llm/conftest.py)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Telemetry on over an SDK provider that keeps every finished span in memory; off afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    router.instrument(provider)
    yield exporter
    router.uninstrument()
    provider.shutdown()


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = _named(exporter, name)
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def _children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in exporter.get_finished_spans()
            if s.parent is not None and s.parent.span_id == parent.context.span_id]


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# -- classify ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "tier", "ran"), [
    (RULE, "rules", ["router.tier.rules"]),
    (STATIC, "static", ["router.tier.rules", "router.tier.static"]),
    (EMBEDDING, "embedding", ["router.tier.rules", "router.tier.static", "router.tier.embedding"]),
])
def test_classify_is_one_span_with_a_child_per_tier_that_ran(spans: InMemorySpanExporter, mini_router: Router,
                                                             text: str, tier: str, ran: list[str]) -> None:
    d = mini_router.classify(text)
    assert d.tier == tier
    root = _one(spans, "router.classify")
    assert root.parent is None and root.kind == SpanKind.INTERNAL
    attributes = _attrs(root)
    manifest = mini_router.artifact.manifest
    assert attributes["router.index"] == manifest.name == "mini"
    assert attributes["router.index.version"] == manifest.manifest_sha256[:12]
    assert attributes["router.batch.size"] == 1
    assert attributes["router.tier"] == tier and attributes.get("router.intent") == d.intent  # none when out of scope
    assert attributes["router.confidence"] == pytest.approx(d.confidence)
    assert attributes["router.escalated"] is d.escalate is False
    assert attributes["router.out_of_scope"] is d.out_of_scope is (tier == "embedding")
    assert attributes["router.accepted"] is d.accepted is (tier != "embedding")
    tiers = _children(spans, root)
    assert [s.name for s in tiers] == ran  # in chain order; the tiers after the deciding one never ran
    settled = [_attrs(s)["router.tier.settled"] for s in tiers]
    assert settled == [0] * (len(ran) - 1) + [1]  # the last tier that ran is the one that decided
    assert _attrs(tiers[-1])["router.tier.kind"] == ("compute" if tier == "embedding" else "inline")
    # Real start and end times, nested in the classify span and in order.
    assert root.start_time is not None and root.end_time is not None
    previous_end = root.start_time
    for span in tiers:
        assert span.start_time is not None and span.end_time is not None
        assert previous_end <= span.start_time <= span.end_time <= root.end_time
        previous_end = span.end_time
        assert span.context is not None and root.context is not None
        assert span.context.trace_id == root.context.trace_id


def test_a_batch_is_one_span_with_a_decision_event_per_text(spans: InMemorySpanExporter, mini_router: Router) -> None:
    texts = [RULE, STATIC, EMBEDDING]
    decisions = mini_router.classify_many(texts)
    root = _one(spans, "router.classify")
    assert _attrs(root)["router.batch.size"] == 3
    assert "router.intent" not in _attrs(root)  # a batch's Decisions are its events, in order
    events = [dict(e.attributes or {}) for e in root.events if e.name == "router.decision"]
    assert [e["router.position"] for e in events] == [0, 1, 2]
    assert [(e["router.tier"], e.get("router.intent")) for e in events] == [(d.tier, d.intent) for d in decisions]
    tiers = {s.name: _attrs(s) for s in _children(spans, root)}
    # Each tier's span covers the texts still pending when its turn came, and counts those it settled.
    turns = {name: (a["router.batch.size"], a["router.tier.settled"]) for name, a in tiers.items()}
    assert turns == {"router.tier.rules": (3, 1), "router.tier.static": (2, 1), "router.tier.embedding": (1, 1)}


def test_the_async_path_makes_the_same_spans(spans: InMemorySpanExporter, mini_router: Router) -> None:
    async def both() -> None:
        await mini_router.aclassify(EMBEDDING)
        await mini_router.aclassify_many([RULE, STATIC])

    asyncio.run(both())
    single, batch = _named(spans, "router.classify")
    assert [s.name for s in _children(spans, single)] == [
        "router.tier.rules", "router.tier.static", "router.tier.embedding"]
    assert _attrs(single)["router.tier"] == "embedding" and _attrs(batch)["router.batch.size"] == 2
    assert [s.name for s in _children(spans, batch)] == ["router.tier.rules", "router.tier.static"]


def test_classify_under_a_current_span_is_its_child(spans: InMemorySpanExporter, mini_router: Router) -> None:
    assert _telemetry.tracer is not None  # the fixture's SDK provider's: a caller's span, recorded there too
    with _telemetry.tracer.start_as_current_span("caller") as caller:
        mini_router.classify(RULE)
    root = _one(spans, "router.classify")
    assert root.parent is not None and root.parent.span_id == caller.get_span_context().span_id


# -- tier 2 ------------------------------------------------------------------------------------------
def _memory_tier2(mini_index: Path, **providers: Any) -> Router:
    config = LLMConfig(backends=[{"backend": "memory", "name": "mem"}], gate="on")
    return Router.load(mini_index, llm=config, providers=providers or None)


def test_tier2_attempt_is_a_client_span_under_the_llm_tier(spans: InMemorySpanExporter, mini_index: Path) -> None:
    with _memory_tier2(mini_index) as r:
        d = r.classify(ESCALATED)  # the sync path: tier 2 runs on the bridge's loop, in its own thread
        assert d.tier == "llm" and d.llm is not None

        async def settle() -> None:
            await r.aclassify(ESCALATED)

        asyncio.run(settle())  # the async path: on this loop
    for root in _named(spans, "router.classify"):
        assert _attrs(root)["router.tier"] == "llm"
        llm = next(s for s in _children(spans, root) if s.name == "router.tier.llm")
        assert _attrs(llm)["router.tier.kind"] == "io" and _attrs(llm)["router.tier.settled"] == 1
        (attempt,) = _children(spans, llm)
        assert attempt.name == "chat memory" and attempt.kind == SpanKind.CLIENT
        a = _attrs(attempt)
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "memory"
        assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "memory"
        assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (0, 0)  # the memory model's
        assert a["router.provider"] == "mem" and a["router.attempt"] == 1 and a["router.status"] == "ok"
        assert "router.stage" not in a and "router.cost_usd" not in a  # tier 2 has no meter
        assert attempt.status.status_code == StatusCode.UNSET


def test_a_failed_tier2_attempt_is_an_error_span(spans: InMemorySpanExporter, mini_index: Path) -> None:
    config = LLMConfig(backends=[{"backend": "memory", "name": "custom"}], gate="on")
    with Router.load(mini_index, llm=config, providers={"custom": BrokenProvider()}) as r:
        d = r.classify(ESCALATED)
    assert d.degraded
    (attempt,) = _named(spans, "chat memory")
    a = _attrs(attempt)
    assert attempt.status.status_code == StatusCode.ERROR
    assert a["error.type"] == a["router.status"] == "error:ZeroDivisionError"
    assert "ZeroDivisionError" in (attempt.status.description or "")
    assert a["gen_ai.provider.name"] == "custom"  # neither a known kind nor a router adapter: its label
    assert "gen_ai.response.model" not in a
    root = _one(spans, "router.classify")
    assert _attrs(root)["router.degraded"] is True and root.status.status_code == StatusCode.UNSET


# -- the dispatcher ------------------------------------------------------------------------------------
def test_each_dispatch_attempt_is_a_span_matching_its_trace_record(spans: InMemorySpanExporter,
                                                                   harness: Harness) -> None:  # noqa: F811
    f = harness.fakes
    f.openai.fault("500", times=1)  # the first attempt fails, its retry answers
    f.openai.script("balance please", '{"account": "savings"}')
    d = harness.make()
    result = d.dispatch("session-7", "balance", text="balance please")
    assert result.params == {"account": "savings"}
    records = harness.records(d)
    attempts = sorted((s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT),
                      key=lambda s: s.start_time or 0)
    assert len(attempts) == len(records) == 2
    for span, record in zip(attempts, records, strict=True):
        a = _attrs(span)
        assert span.name == f"chat {record['model']}" == "chat gpt-5.4-nano"
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == record["model"] and a["router.provider"] == record["provider"]
        assert (a["router.attempt"], a["router.status"]) == (record["attempt"], record["status"])
        assert (a["router.stage"], a["router.skill"]) == (record["stage"], record["skill"]) == ("extraction", "balance")
        assert a["gen_ai.conversation.id"] == record["session"] == "session-7"
        assert a["router.cost_usd"] == pytest.approx(record["cost_usd"])
        assert (a["server.address"], a["server.port"]) == ("127.0.0.1", httpx.URL(f.openai.url).port)
    failed, answered = attempts
    assert failed.status.status_code == StatusCode.ERROR and _attrs(failed)["error.type"] == "http_500"
    assert "gen_ai.usage.input_tokens" not in _attrs(failed)  # refused before any work: nothing billed
    ok = _attrs(answered)
    record = records[1]
    assert answered.status.status_code == StatusCode.UNSET and "error.type" not in ok
    # The convention's input tokens include cached ones: the record's input, cached and cache-write tokens.
    assert ok["gen_ai.usage.input_tokens"] == record["tokens"] - record["output_tokens"] > 0
    assert ok["gen_ai.usage.output_tokens"] == record["output_tokens"] > 0
    assert ok["gen_ai.response.model"] == "gpt-5.4-nano"


def test_fallbacks_and_skipped_targets_are_spans_too(spans: InMemorySpanExporter,
                                                     harness: Harness) -> None:  # noqa: F811
    f = harness.fakes
    f.openai.always("500")
    f.gemini.script("balance please", '{"account": "savings"}')
    d = harness.make(retry={"max_retries": 0})
    d.dispatch("s", "balance", text="balance please")
    by_status = {_attrs(s)["router.status"]: _attrs(s) for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT}
    assert by_status["http_500"]["gen_ai.provider.name"] == "openai"
    assert by_status["ok"]["gen_ai.provider.name"] == "gcp.gemini"
    assert by_status["ok"]["router.fallback_from"] == "openai/gpt-5.4-nano"
    assert "router.fallback_from" not in by_status["http_500"]


# -- off ---------------------------------------------------------------------------------------------
def test_off_by_default_no_span_is_made(mini_index: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    from opentelemetry import trace

    assert not _telemetry.enabled()
    with trace.get_tracer("caller", tracer_provider=provider).start_as_current_span("caller"):
        with _memory_tier2(mini_index) as r:
            r.classify(RULE)
            r.classify(ESCALATED)
    assert [s.name for s in exporter.get_finished_spans()] == ["caller"]  # the caller's own, nothing of ours
    router.instrument(provider)
    router.uninstrument()
    with _memory_tier2(mini_index) as r:
        r.classify(ESCALATED)
    assert [s.name for s in exporter.get_finished_spans()] == ["caller"]


def test_import_router_and_classify_do_not_import_opentelemetry(mini_index: Path) -> None:
    code = ("import sys, router\n"
            "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'import router'\n"
            f"r = router.Router.load({str(mini_index)!r})\n"
            f"r.classify({RULE!r}); r.classify({EMBEDDING!r})\n"
            "loaded = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_without_the_extra_switching_it_on_names_the_install() -> None:
    code = ("import sys\n"
            "sys.modules['opentelemetry'] = None  # as if the [otel] extra were not installed\n"
            "import router\n"
            "from router._telemetry import configure_from_serve_config\n"
            "from router.service import ServeConfig\n"
            "assert configure_from_serve_config(ServeConfig()) is False  # not configured: nothing to import\n"
            "for switch_on in (router.instrument, lambda: configure_from_serve_config(\n"
            "        ServeConfig(otlp_endpoint='http://127.0.0.1:4318'))):\n"
            "    try:\n"
            "        switch_on()\n"
            "    except router.MissingDependency as exc:\n"
            "        print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=120, capture_output=True, text=True)
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:  # the module that failed to import (opentelemetry, opentelemetry.exporter), then the hint
        assert line.startswith("OpenTelemetry needs the [otel] extra (opentelemetry")
        assert line.endswith("is not installed): pip install 'tiered-router[otel]'")


# -- configuration -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["127.0.0.1:4318", "ftp://collector", "http://", "not a url"])
def test_a_bad_otlp_endpoint_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ConfigError, match=r"otlp_endpoint") as info:
        load_serve_config({"otlp_endpoint": value})
    assert repr(value) in str(info.value) or value in str(info.value)


def test_the_endpoint_comes_from_the_flag_then_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    url = _telemetry.serve_traces_url
    assert url(ServeConfig()) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/prefix/")  # a base URL, as the spec says
    assert url(ServeConfig()) == "http://base:4318/prefix/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom")  # the full URL, as it is
    assert url(ServeConfig()) == "http://traces:4318/custom"
    assert url(ServeConfig(otlp_endpoint="http://flag:4318")) == "http://flag:4318/v1/traces"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert url(ServeConfig()) is None
    assert url(ServeConfig(otlp_endpoint="http://flag:4318")) == "http://flag:4318/v1/traces"
    assert _telemetry.traces_url("http://c:4318") == _telemetry.traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert _telemetry.traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"


def test_configure_builds_one_provider_and_uninstrument_shuts_it_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    try:
        provider = _telemetry.configure("http://127.0.0.1:9")  # nothing listens: export fails quietly, later
        assert _telemetry.enabled()
        assert provider.resource.attributes["service.name"] == "tiered-router"
        assert _telemetry.configure("http://127.0.0.1:9/") is provider  # the same: reused
        other = _telemetry.configure("http://127.0.0.1:9", service_name="router-eu")
        assert other is not provider and other.resource.attributes["service.name"] == "router-eu"
        mine = TracerProvider()
        router.instrument(mine)  # a provider of the caller's own replaces (and shuts down) the one configured
        assert _telemetry._owned is None and _telemetry.configure("http://127.0.0.1:9") is not other
    finally:
        router.uninstrument()
    assert not _telemetry.enabled() and _telemetry._owned is None


@pytest.mark.parametrize(("kind", "expected"), [
    ("openai", "openai"), ("anthropic", "anthropic"), ("gemini", "gcp.gemini"), ("vllm", "vllm"),
    ("openai_compatible", "openai_compatible"),
])
def test_provider_names_are_the_conventions_well_known_values(kind: str, expected: str) -> None:
    from router.providers import PROVIDERS, HttpClients, ProviderConfig

    config = ProviderConfig(kind=kind, base_url="http://127.0.0.1:1")
    assert _telemetry.provider_name(PROVIDERS.get(kind)("label", config, HttpClients()), "label") == expected
    assert _telemetry.provider_name(PROVIDERS.get("memory")("label", ProviderConfig(kind="memory"), HttpClients()),
                                    "label") == "memory"


# -- the HTTP service ------------------------------------------------------------------------------------
def test_a_request_is_a_server_span_child_of_its_traceparent(spans: InMemorySpanExporter,
                                                             start_server: Any) -> None:  # noqa: F811
    server: Running = start_server()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/v1/classify", json={"text": RULE}, headers={"traceparent": TRACEPARENT}).status_code == 200
        assert client.post("/v1/classify", json={"text": STATIC}).status_code == 200
        assert client.post("/v1/classify", json={"text": ""}).status_code == 422
        assert client.get("/readyz").status_code == client.get("/metrics").status_code == 200  # probes: no span
    requests = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert [s.name for s in requests] == ["POST /v1/classify"] * 3
    traced, fresh, refused = requests
    assert traced.context is not None and traced.parent is not None
    assert f"{traced.context.trace_id:032x}" == TRACE_ID and f"{traced.parent.span_id:016x}" == PARENT_ID
    assert traced.parent.is_remote
    assert fresh.parent is None and fresh.context is not None and f"{fresh.context.trace_id:032x}" != TRACE_ID
    a = _attrs(traced)
    assert (a["http.request.method"], a["http.route"], a["http.response.status_code"]) == ("POST", "/v1/classify", 200)
    assert _attrs(refused)["http.response.status_code"] == 422 and refused.status.status_code == StatusCode.UNSET
    classified = _named(spans, "router.classify")
    assert len(classified) == 2  # the refused text never reached the router
    for span, request in zip(classified, (traced, fresh), strict=True):
        assert span.parent is not None and request.context is not None
        assert span.parent.span_id == request.context.span_id
        assert [c.name for c in _children(spans, span)][0] == "router.tier.rules"


# -- the OTLP wire ----------------------------------------------------------------------------------
class _Collector(ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 that keeps what is POSTed to it: an OTLP/HTTP collector's front."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                collector.posts.append((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_router_serve_exports_protobuf_spans_over_otlp_http(mini_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    monkeypatch.setenv("OTEL_SERVICE_NAME", "router-under-test")
    collector = _Collector()
    try:
        with ServeProcess("--index", str(mini_index), "--encoder-threads", "1", "--otlp-endpoint", collector.url) as p:
            r = httpx.post(f"{p.url}/v1/classify", json={"text": RULE}, headers={"traceparent": TRACEPARENT},
                           timeout=30)
            assert r.status_code == 200 and r.json()["decisions"][0]["tier"] == "rules"
        # Stopped by SIGTERM: the batch of spans still waiting is flushed before the process exits.
    finally:
        collector.shutdown()
        collector.server_close()
    assert collector.posts and {(path, kind) for path, kind, _ in collector.posts} == {
        ("/v1/traces", "application/x-protobuf")}
    found: dict[str, Any] = {}
    for _, _, body in collector.posts:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = {kv.key: kv.value for kv in resource_spans.resource.attributes}
            assert resource["service.name"].string_value == "router-under-test"
            assert resource["process.pid"].int_value > 0
            for scope_spans in resource_spans.scope_spans:
                assert scope_spans.scope.name == "tiered-router"
                for span in scope_spans.spans:
                    found.setdefault(span.name, span)
    assert {"POST /v1/classify", "router.classify", "router.tier.rules"} <= found.keys()
    classify = found["router.classify"]
    assert classify.trace_id.hex() == TRACE_ID  # the request's trace, end to end
    assert classify.parent_span_id == found["POST /v1/classify"].span_id
    assert found["POST /v1/classify"].parent_span_id.hex() == PARENT_ID
    attributes = {kv.key: kv.value for kv in classify.attributes}
    assert attributes["router.tier"].string_value == "rules" and attributes["router.intent"].string_value == "transfer"


def _classify_on_a_fresh_connection(url: str) -> int:
    """The pid of the worker that took a fresh connection (its /readyz says), after one classify on it."""
    with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1)) as client:
        pid = int(client.get("/readyz").json()["pid"])
        assert client.post("/v1/classify", json={"text": RULE}).status_code == 200
        return pid


def test_each_worker_of_router_serve_exports_its_own_spans(mini_index: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    collector = _Collector()
    sent: dict[int, int] = {}
    try:
        with ServeProcess("--index", str(mini_index), "--encoder-threads", "1", "--workers", "2",
                          "--otlp-endpoint", collector.url) as p, ThreadPoolExecutor(8) as pool:
            deadline = time.monotonic() + 90
            while len(sent) < 2:  # concurrent fresh connections until both workers have classified
                assert time.monotonic() < deadline, f"only workers {list(sent)} answered"
                for pid in pool.map(lambda _: _classify_on_a_fresh_connection(p.url), range(8)):
                    sent[pid] = sent.get(pid, 0) + 1
    finally:
        collector.shutdown()
        collector.server_close()
    exported: dict[int, int] = {}
    for _, _, body in collector.posts:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            pid = {kv.key: kv.value for kv in resource_spans.resource.attributes}["process.pid"].int_value
            exported[pid] = exported.get(pid, 0) + sum(
                1 for scope in resource_spans.scope_spans for span in scope.spans if span.name == "router.classify")
    assert exported == sent  # every classification, exported by the worker process that made it
