"""The methods one by one, where the end-to-end slice cannot reach: answers, failures, the encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router.bench.data import load_bench_data
from router.bench.methods import METHODS, MethodContext
from router.bench.methods.semantic import _encoder_class
from router.bench.methods.tiered import Tiered, outcome_of
from router.bench.plots import TIER_COLOURS, TIER_ORDER
from router.config import EncoderConfig
from router.decision import TIER_EMBEDDING, TIER_LLM, TIER_RULES, TIER_STATIC, Candidate, Decision
from router.encoders import build_encoder
from router.llm.config import LLMBackendConfig, LLMConfig

ENCODER = EncoderConfig(threads=1, cache_size=0)


def context(tmp_path: Path, **backend: object) -> MethodContext:
    data = load_bench_data("clinc150", max_intents=3, train_per_intent=8, test_limit=20)
    llm = LLMConfig(backends=[LLMBackendConfig(backend="memory", **backend)])
    return MethodContext(data, ENCODER, llm, tmp_path)


def test_every_turn_offers_every_intent_and_reads_none_as_an_abstention(tmp_path: Path) -> None:
    ctx = context(tmp_path, answers={"play some jazz": "none", "what is 2+2": "accept_reservations"})
    method = METHODS["llm-every-turn"](ctx, 5)
    try:
        method.build()
        refused = method.classify("play some jazz")
        assert (refused.guess, refused.accepted, refused.tier) == (None, False, "llm")
        answered = method.classify("what is 2+2")
        assert (answered.guess, answered.accepted) == ("accept_reservations", True)
        assert answered.llm is not None and answered.llm.backend == "memory"
        # The default answer is the first offered label: the whole intent list is offered.
        assert method.classify("anything").guess == ctx.data.intents[0]
    finally:
        method.close()


def test_every_turn_turns_a_backend_failure_into_a_degraded_outcome(tmp_path: Path) -> None:
    ctx = context(tmp_path, answers={"bad": "not_an_intent"})
    method = METHODS["llm-every-turn"](ctx, 5)
    try:
        method.build()
        outcome = method.classify("bad")
        assert (outcome.guess, outcome.accepted, outcome.tier) == (None, False, "degraded")
        assert outcome.llm is not None and outcome.llm.fallback_from == ["bad_response"]
    finally:
        method.close()


def test_tier2_reuses_the_tiers01_index(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    first, second = METHODS["tiers01"](ctx, None), METHODS["tier2"](ctx, None)
    try:
        first_build = first.build()
        folder = ctx.shared["tiered_index"]
        second.build()
        assert ctx.shared["tiered_index"] is folder and first_build > 0
        assert any("tier 2 forced on" in note for note in second.notes)
    finally:
        first.close()
        second.close()


def test_static_off_serves_the_tiers01_index_without_the_static_tier(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    first, second = METHODS["tiers01"](ctx, None), METHODS["tiers01-static-off"](ctx, None)
    try:
        first.build()
        folder = ctx.shared["tiered_index"]
        second.build()
        assert ctx.shared["tiered_index"] is folder
        assert isinstance(first, Tiered) and isinstance(second, Tiered)
        assert first.router is not None and second.router is not None
        assert "static" in first.router.chain.names and "static" not in second.router.chain.names
        assert second.name == "tiered-router, tiers 0-1, static off"
        assert any("without the static tier" in note for note in second.notes)
    finally:
        first.close()
        second.close()


def _decision(tier: str, intent: str | None = "balance", *, out_of_scope: bool = False, escalate: bool = False,
              degraded: bool = False) -> Decision:
    return Decision(intent=intent, out_of_scope=out_of_scope, confidence=0.9, tier=tier, escalate=escalate,
                    candidates=[Candidate("balance", 0.9)], degraded=degraded)


@pytest.mark.parametrize(("decision", "label", "accepted"), [
    (_decision(TIER_RULES), "rules", True),
    (_decision(TIER_STATIC), "static", True),
    (_decision(TIER_EMBEDDING), "embedding", True),
    (_decision(TIER_EMBEDDING, escalate=True), "escalated", False),
    (_decision(TIER_EMBEDDING, None, out_of_scope=True), "out_of_scope", False),
    (_decision(TIER_EMBEDDING, escalate=True, degraded=True), "degraded", False),
    (_decision(TIER_LLM), "llm", True),
])
def test_outcome_labels_the_tier_that_answered(decision: Decision, label: str, accepted: bool) -> None:
    outcome = outcome_of(decision)
    assert (outcome.tier, outcome.accepted, outcome.guess) == (label, accepted, "balance")
    # Every label our rows can carry has a place and a colour in the plots.
    assert label in TIER_ORDER and label in TIER_COLOURS


def test_semantic_router_sees_our_encoders_vectors() -> None:
    ours = build_encoder(ENCODER)
    wrapped = _encoder_class()(build_encoder(ENCODER))
    texts = ["what is my bank balance", "play some jazz"]
    assert np.allclose(np.array(wrapped(texts)), ours.encode(texts), atol=1e-6)


@pytest.mark.parametrize("key", sorted(METHODS))
def test_every_registered_method_has_a_name_and_notes(tmp_path: Path, key: str) -> None:
    method = METHODS[key](context(tmp_path), 7)
    assert method.name and method.sample == 7 and isinstance(method.notes, list)
    method.close()
