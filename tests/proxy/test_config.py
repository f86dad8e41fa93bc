"""The model-routing file's `chat` stage and `proxy:` section."""

from __future__ import annotations

import pytest

from router.dispatch import load_model_routing, model_routing_from_dict
from router.dispatch._config import DEFAULT_REFUSAL, STAGES
from router.errors import ConfigError
from router.proxy._routing import model_ids, served_models


def test_the_shipped_file_has_a_chat_stage_and_the_proxy_defaults() -> None:
    config = load_model_routing()
    assert "chat" in STAGES and "chat" in config.defaults
    assert [r.key for r in config.chain("any", "chat")] == ["anthropic/claude-haiku-4-5", "openai/gpt-5.4-nano"]
    proxy = config.proxy
    assert proxy.out_of_scope.refusal == DEFAULT_REFUSAL and proxy.out_of_scope.model is None
    assert proxy.escalated == "best" and proxy.sticky.enabled is False and proxy.context_turns == 0
    assert proxy.default_session == "proxy" and proxy.session_header == "x-router-session"


def test_a_skill_overrides_its_chat_model_and_a_user_file_keeps_the_rest() -> None:
    config = model_routing_from_dict({"overrides": {"info.weather": {"chat": {"provider": "gemini",
                                                                              "model": "gemini-2.5-flash"}}},
                                      "proxy": {"sticky": {"enabled": True}}})
    assert [r.key for r in config.chain("info.weather", "chat")] == ["gemini/gemini-2.5-flash", "openai/gpt-5.4-nano"]
    assert config.defaults["extraction"].model == "gpt-5.4-nano"  # the shipped stages stay
    assert config.proxy.sticky.enabled and config.proxy.sticky.max_words == 6


@pytest.mark.parametrize(("section", "needle"), [
    ({"out_of_scope": {}}, "exactly one"),
    ({"out_of_scope": {"refusal": "no", "model": {"provider": "openai", "model": "gpt-5.4"}}}, "exactly one"),
    ({"out_of_scope": {"model": {"provider": "nope", "model": "gpt-5.4"}}}, "proxy.out_of_scope.model.provider"),
    ({"models": [{"provider": "openai", "model": "unpriced"}]}, "proxy.models[0].model"),
    ({"escalated": "guess"}, "escalated"),
    ({"sticky": {"enabled": True, "ttl": 5}}, "ttl"),
    ({"session_header": "X Session"}, "session_header"),
])
def test_bad_proxy_sections_name_the_field(section: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match="proxy") as refused:
        model_routing_from_dict({"proxy": section})
    assert needle in str(refused.value)


def test_served_models_take_the_chat_bounds_and_list_each_id_once() -> None:
    config = model_routing_from_dict({"proxy": {"models": [{"provider": "openai", "model": "gpt-5.5"}]}})
    models = served_models(config)
    assert models["claude-haiku-4-5"] is models["anthropic/claude-haiku-4-5"]
    assert models["claude-haiku-4-5"].max_tokens == 4096  # the chat stage's ref, not the routing stage's 64
    sonnet = models["claude-sonnet-4-6"]  # named by the diagnostic stage only: the chat stage's bounds
    assert (sonnet.max_tokens, sonnet.timeout_s) == (4096, 60)
    ids = model_ids(config)
    assert len(ids) == len(set(ids)) and {"gpt-5.5", "gemini-2.5-flash", "gpt-5.4"} <= set(ids)
    assert config.state_limits().hold_s >= 60 + 60
