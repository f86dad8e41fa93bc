from __future__ import annotations

import pytest

from router import ConfigError, IntentSet
from router.llm import NONE_LABEL, PromptBuilder


def _intents() -> IntentSet:
    return IntentSet.model_validate({"intents": [
        {"name": "balance", "description": "money in an account", "examples": ["what is my balance", "funds left"]},
        {"name": "transfer", "examples": ["send money to sam"]},
        {"name": "weather", "description": "the forecast", "examples": ["will it rain"]},
    ]})


def test_static_prefix_is_identical_for_every_query_and_lists_every_intent() -> None:
    builder = PromptBuilder(_intents())
    a = builder.build("how much do i have", ["balance", "transfer"])
    b = builder.build("is it sunny", ["weather"])
    assert a.system == b.system
    assert "- balance: money in an account" in a.system and "- transfer: transfer" in a.system
    assert "how much do i have" not in a.system  # the query never enters the cached part


def test_user_part_has_query_candidates_examples_and_none() -> None:
    p = PromptBuilder(_intents(), examples_per_candidate=1, shuffle=False).build("how much", ["balance", "weather"])
    assert p.labels == ("balance", "weather", NONE_LABEL)
    assert p.user.startswith("Message: how much")
    assert '- balance: money in an account (e.g. "what is my balance")' in p.user
    assert "funds left" not in p.user  # one example per candidate
    assert p.messages == [{"role": "system", "content": p.system}, {"role": "user", "content": p.user}]


def test_shuffle_is_deterministic_per_query_and_keeps_none_last() -> None:
    builder = PromptBuilder(_intents())
    cands = ["balance", "transfer", "weather"]
    orders = {builder.build(f"query {i}", cands).labels for i in range(20)}
    assert len(orders) > 1  # position bias is spread across queries
    assert all(o[-1] == NONE_LABEL and sorted(o[:-1]) == sorted(cands) for o in orders)
    assert builder.build("query 3", cands) == builder.build("query 3", cands)


def test_unknown_candidates_are_dropped_and_catalogue_can_be_left_out() -> None:
    p = PromptBuilder(_intents(), catalogue=False).build("x", ["balance", "ghost"])
    assert p.labels == ("balance", NONE_LABEL) and "Known intents" not in p.system


def test_an_intent_named_none_is_refused() -> None:
    intents = IntentSet.model_validate({"intents": [{"name": "none", "examples": ["x"]}]})
    with pytest.raises(ConfigError, match="'none' is reserved"):
        PromptBuilder(intents)


def test_content_free_prompt_changes_only_the_message() -> None:
    from router.llm._prompt import content_free

    p = PromptBuilder(_intents()).build("how much do i have", ["balance", "transfer"])
    null = content_free(p)
    assert null.system == p.system and null.labels == p.labels
    assert null.user.startswith("Message: N/A\n") and "how much do i have" not in null.user
    assert null.user.split("\n", 1)[1] == p.user.split("\n", 1)[1]
