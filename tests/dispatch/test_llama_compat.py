"""The openai_compatible adapter against a REAL llama-cpp-python server (``-m llm``)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from router.dispatch import Dispatcher, model_routing_from_dict
from router.dispatch.demo import build_registry
from router.errors import InvalidParameters
from router.providers import ChatRequest, Message
from tests.llm.test_llama_server import MODEL_ALIAS, LlamaServer

pytestmark = pytest.mark.llm

SCHEMA = {"type": "object", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]}


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaServer]:
    s = LlamaServer()
    yield s
    s.kill()


def _dispatcher(llama: LlamaServer, structured: str = "json_object") -> Dispatcher:
    ref = {"provider": "local", "model": MODEL_ALIAS, "timeout_s": 120, "max_tokens": 48}
    return Dispatcher(model_routing_from_dict({
        "providers": {"local": {"kind": "openai_compatible", "base_url": llama.url, "structured": structured}},
        "prices": {MODEL_ALIAS: {"input": 0, "output": 0}},
        "defaults": {stage: ref for stage in ("routing", "extraction", "formatting", "diagnostic")},
        # Fallbacks merge per stage over the shipped ones: each stage is emptied by name.
        "fallbacks": {stage: [] for stage in ("routing", "extraction", "formatting", "diagnostic")},
        "trace": {"sink": "memory"}, "retry": {"max_retries": 0},
    }), build_registry())


def test_structured_answer_and_real_usage(llama: LlamaServer) -> None:
    with _dispatcher(llama) as d:
        call = d.complete("extraction", "timer", "s", ChatRequest(
            system="Extract the number of minutes as JSON.", messages=(Message("user", "timer for 10 minutes"),),
            json_schema=SCHEMA))
    answer = json.loads(call.completion.text)  # constrained by the server's JSON-schema grammar
    assert isinstance(answer, dict) and isinstance(answer["minutes"], int)
    usage = call.completion.usage
    assert not usage.estimated and usage.input_tokens > 10 and usage.output_tokens > 0
    assert call.cost == 0 and call.provider == "local"


def test_a_dispatch_through_the_local_model_ends_in_a_result_or_a_clear_error(llama: LlamaServer) -> None:
    with _dispatcher(llama) as d:
        try:
            result = d.dispatch("s", "timer", text="set a timer for 10 minutes")
        except InvalidParameters as exc:  # a 135M model may not fill the schema well; the re-ask was made
            assert "after one re-ask" in str(exc)
        else:
            assert result.status == "ok" and 1 <= result.params["minutes"] <= 1440
        assert len([r for r in d.sink.records if r["kind"] == "call"]) >= 1  # type: ignore[attr-defined]
