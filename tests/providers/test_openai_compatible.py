"""Request bodies of the OpenAI-protocol backends for a structured choice, as each server family documents them."""

from __future__ import annotations

from typing import Any

import pytest

from router.errors import BadResponse
from router.llm import LLMBackendConfig
from router.providers import ChatRequest, HttpClients, Message, build_provider
from router.providers._base import label_grammar
from router.providers._openai import OpenAICompatibleChat

REQUEST = ChatRequest(system="static", messages=(Message("user", "Message: hi"),),
                      choices=("greeting", "weather", "none"), query="hi", max_tokens=24)


def _client(backend: str = "openai_compatible", **options: str) -> OpenAICompatibleChat:
    config = LLMBackendConfig(backend=backend, url="http://127.0.0.1:1/v1/", model="m", **options)
    provider = build_provider(config.label, config.provider(), HttpClients())
    assert isinstance(provider, OpenAICompatibleChat)
    return provider


def _body(provider: OpenAICompatibleChat) -> dict[str, Any]:
    return provider.body("m", REQUEST)


def test_json_schema_sits_under_json_schema_dot_schema() -> None:
    fmt = _body(_client())["response_format"]
    assert fmt["type"] == "json_schema" and "schema" not in fmt  # a flat schema key is ignored by llama.cpp
    assert fmt["json_schema"]["schema"]["properties"]["intent"]["enum"] == ["greeting", "weather", "none"]


def test_json_object_with_schema_for_llama_cpp_python() -> None:
    body = _body(_client(constraint="json_object"))
    assert body["response_format"]["type"] == "json_object"
    assert body["response_format"]["schema"]["required"] == ["intent"]


def test_grammar_allows_only_the_labels() -> None:
    body = _body(_client(constraint="grammar"))
    assert body["grammar"] == 'root ::= "greeting" | "weather" | "none"'
    assert label_grammar(('say "hi"',)) == 'root ::= "say \\"hi\\""'


def test_vllm_choice_fields() -> None:
    assert _body(_client("vllm"))["structured_outputs"] == {"choice": ["greeting", "weather", "none"]}
    assert _body(_client("vllm", structured="guided_choice"))["guided_choice"][-1] == "none"


def test_the_tier2_body_keeps_its_shape() -> None:
    body = _body(_client("vllm"))
    assert set(body) == {"model", "messages", "temperature", "max_tokens", "structured_outputs"}
    assert body["messages"] == [{"role": "system", "content": "static"}, {"role": "user", "content": "Message: hi"}]
    assert body["temperature"] == 0 and body["max_tokens"] == 24


@pytest.mark.parametrize(("content", "label"), [('{"intent": "weather"}', "weather"), (' {"intent":"none"} ', "none")])
def test_json_answers_are_parsed(content: str, label: str) -> None:
    assert _client().parse_choice(content) == label


@pytest.mark.parametrize("content", ['{"intent": 3}', '{"label": "weather"}', "weather"])
def test_bad_json_answers_raise(content: str) -> None:
    with pytest.raises(BadResponse):
        _client().parse_choice(content)
