"""ChatRouter: which models answer a proxied turn, from its model name, its Decision and its session."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from router._decision import Candidate, Decision
from router.dispatch import model_routing_from_dict
from router.errors import UnknownModel
from router.providers._base import ChatRequest, Message
from router.proxy._request import ProxyRequest
from router.proxy._routing import ChatRouter, Route
from router.proxy._sticky import MemorySticky

OVERRIDES = {"info.weather": {"chat": {"provider": "gemini", "model": "gemini-2.5-flash"}}}


def decision(intent: str | None, *, skill: str | None = None, escalate: bool = False, out_of_scope: bool = False,
             tier: str = "embedding") -> Decision:
    candidates = [Candidate(intent, 0.4)] if intent else []
    return Decision(intent=intent, out_of_scope=out_of_scope, confidence=0.9, tier=tier, escalate=escalate,
                    candidates=candidates, skill=skill or intent)


class Classifier:
    """Scripted Decisions; remembers what it was asked."""

    def __init__(self, answers: dict[str, Decision]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, text: str) -> Decision:
        self.asked.append(text)
        return self.answers.get(text, decision(None, out_of_scope=True))


def request(*texts: str, model: str = "auto") -> ProxyRequest:
    messages = tuple(Message("user", t) for t in texts)
    return ProxyRequest("openai", model, ChatRequest(system="", messages=messages), False, False, None, texts)


def make(answers: dict[str, Decision], proxy: dict[str, Any] | None = None,
         sticky: MemorySticky | None = None, max_text_chars: int = 2000) -> tuple[ChatRouter, Classifier]:
    config = model_routing_from_dict({"overrides": OVERRIDES, "proxy": proxy or {}})
    classify = Classifier(answers)
    return ChatRouter(config, classify, lambda skill: config.chain(skill, "chat"), sticky, max_text_chars), classify


def route(router: ChatRouter, *texts: str, model: str = "auto", session: str | None = None) -> Route:
    return asyncio.run(router.route(request(*texts, model=model), session))


def keys(r: Route) -> list[str]:
    return [ref.key for ref in r.chain]


def test_auto_routes_by_the_decisions_skill() -> None:
    router, _ = make({"rain?": decision("weather", skill="info.weather", tier="static"), "hi": decision("greeting")})
    weather = route(router, "rain?")
    assert weather.kind == "auto" and weather.intent == "weather" and weather.skill == "info.weather"
    assert weather.tier == "static" and keys(weather) == ["gemini/gemini-2.5-flash", "openai/gpt-5.4-nano"]
    assert keys(route(router, "hi")) == ["anthropic/claude-haiku-4-5", "openai/gpt-5.4-nano"]  # defaults.chat


def test_the_last_user_message_is_classified() -> None:
    router, classify = make({"rain?": decision("weather")})
    assert route(router, "hi", "rain?").intent == "weather"
    assert classify.asked == ["rain?"]


def test_out_of_scope_gets_the_refusal_or_the_configured_model() -> None:
    router, _ = make({})
    refused = route(router, "a joke")
    assert refused.kind == "refusal" and refused.chain == () and refused.out_of_scope
    assert refused.refusal == "Sorry, I can't help with that here."
    router, _ = make({}, {"out_of_scope": {"model": {"provider": "openai", "model": "gpt-5.4"}}})
    to_model = route(router, "a joke")
    assert to_model.kind == "auto" and keys(to_model) == ["openai/gpt-5.4"] and to_model.out_of_scope


def test_an_unsure_turn_goes_by_its_best_guess_or_as_out_of_scope() -> None:
    answers = {"rain maybe": decision("weather", skill="info.weather", escalate=True)}
    router, _ = make(answers)
    assert keys(route(router, "rain maybe"))[0] == "gemini/gemini-2.5-flash"
    router, _ = make(answers, {"escalated": "out_of_scope"})
    unsure = route(router, "rain maybe")
    assert unsure.kind == "refusal" and unsure.intent is None and unsure.decision is not None
    assert unsure.decision.intent == "weather"  # the Decision keeps its guess


@pytest.mark.parametrize(("name", "key"), [("gpt-5.4-nano", "openai/gpt-5.4-nano"),
                                           ("anthropic/claude-haiku-4-5", "anthropic/claude-haiku-4-5"),
                                           ("gemini-2.5-flash", "gemini/gemini-2.5-flash")])
def test_a_named_model_is_that_model_alone(name: str, key: str) -> None:
    router, classify = make({})
    named = route(router, "hi", model=name)
    assert named.kind == "model" and keys(named) == [key] and named.tier == "model" and named.intent is None
    assert classify.asked == []  # not classified


def test_an_unknown_model_is_404_naming_the_served_ones() -> None:
    router, _ = make({})
    with pytest.raises(UnknownModel) as refused:
        route(router, "hi", model="gpt-nope")
    assert refused.value.status == 404 and refused.value.code == "model_not_found"
    assert "'gpt-nope'" in str(refused.value) and "auto" in str(refused.value)
    assert router.model_ids()[0] == "auto"


def test_context_turns_join_earlier_turns_when_the_last_is_unsure() -> None:
    answers = {"and in euros?": decision("exchange_rate", escalate=True),
               "dollars to pesos\nand in euros?": decision("exchange_rate"),
               "hi\ndollars to pesos\nand in euros?": decision("greeting")}
    router, classify = make(answers, {"context_turns": 1, "escalated": "out_of_scope"})
    joined = route(router, "hi", "dollars to pesos", "and in euros?")
    assert joined.intent == "exchange_rate" and joined.kind == "auto"
    assert classify.asked == ["and in euros?", "dollars to pesos\nand in euros?"]  # one earlier turn only
    # Off (the default): the last message alone.
    router, classify = make(answers, {"escalated": "out_of_scope"})
    assert route(router, "dollars to pesos", "and in euros?").kind == "refusal"
    assert classify.asked == ["and in euros?"]
    # Joined turns stay within the classifier's limit: a turn that would pass it is left out.
    router, classify = make(answers, {"context_turns": 2}, max_text_chars=20)
    route(router, "dollars to pesos", "and in euros?")
    assert classify.asked == ["and in euros?"]


def test_sticky_keeps_a_named_sessions_confident_intent() -> None:
    answers = {"dollars to pesos": decision("exchange_rate"), "and in euros?": decision(None, out_of_scope=True),
               "ok": decision("greeting", escalate=True)}
    config = model_routing_from_dict({"proxy": {"sticky": {"enabled": True, "max_words": 3}}})
    sticky = MemorySticky(config.proxy.sticky)
    router, _ = make(answers, {"sticky": {"enabled": True, "max_words": 3}}, sticky)
    assert route(router, "dollars to pesos", session="s1").tier != "sticky"
    kept = route(router, "and in euros?", session="s1")
    assert kept.sticky and kept.tier == "sticky" and kept.intent == "exchange_rate" and kept.kind == "auto"
    assert route(router, "ok", session="s1").intent == "exchange_rate"  # escalated: kept too
    assert route(router, "and in euros?", session=None).kind == "refusal"  # no session of its own
    assert route(router, "and in euros?", session="s2").kind == "refusal"  # another session
    answers["and in euros right now please"] = decision(None, out_of_scope=True)
    assert route(router, "and in euros right now please", session="s1").kind == "refusal"  # over max_words
