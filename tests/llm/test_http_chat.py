"""Request bodies of the OpenAI-protocol backends, as each server family documents them."""

from __future__ import annotations

import json

import httpx
import pytest

from router.llm import LLMBackendConfig, Prompt
from router.llm.http_chat import OpenAICompatibleClient, VLLMClient, label_grammar

PROMPT = Prompt(system="static", user="Message: hi", labels=("greeting", "weather", "none"), query="hi")


def _client(cls: type, **options: str) -> OpenAICompatibleClient | VLLMClient:
    config = LLMBackendConfig(backend="openai_compatible", url="http://127.0.0.1:1/v1/", model="m", **options)
    return cls(config, httpx.AsyncClient())


def test_json_schema_sits_under_json_schema_dot_schema() -> None:
    body = _client(OpenAICompatibleClient).body(PROMPT)
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and "schema" not in fmt  # a flat schema key is ignored by llama.cpp
    assert fmt["json_schema"]["schema"]["properties"]["intent"]["enum"] == ["greeting", "weather", "none"]


def test_json_object_with_schema_for_llama_cpp_python() -> None:
    body = _client(OpenAICompatibleClient, constraint="json_object").body(PROMPT)
    assert body["response_format"]["type"] == "json_object"
    assert body["response_format"]["schema"]["required"] == ["intent"]


def test_grammar_allows_only_the_labels() -> None:
    body = _client(OpenAICompatibleClient, constraint="grammar").body(PROMPT)
    assert body["grammar"] == 'root ::= "greeting" | "weather" | "none"'
    assert label_grammar(('say "hi"',)) == 'root ::= "say \\"hi\\""'


def test_vllm_choice_fields() -> None:
    assert _client(VLLMClient).body(PROMPT)["structured_outputs"] == {"choice": ["greeting", "weather", "none"]}
    assert _client(VLLMClient, structured="guided_choice").body(PROMPT)["guided_choice"][-1] == "none"


@pytest.mark.parametrize(("content", "label"), [('{"intent": "weather"}', "weather"), (' {"intent":"none"} ', "none")])
def test_json_answers_are_parsed(content: str, label: str) -> None:
    assert _client(OpenAICompatibleClient).parse_label(content) == label


@pytest.mark.parametrize("content", ['{"intent": 3}', '{"label": "weather"}', "weather"])
def test_bad_json_answers_raise(content: str) -> None:
    with pytest.raises((TypeError, KeyError, json.JSONDecodeError)):
        _client(OpenAICompatibleClient).parse_label(content)
