"""The build-time gate: tier 2 stays off when it does not beat tier 1 on the escalated validation slice."""

from __future__ import annotations

import json
from pathlib import Path

from router import Builder, Router, RouterConfig
from router._decision import TIER_LLM, Candidate, Decision, LLMCall
from router.llm import LLMConfig
from router.llm._gate import decide_gate, gate_status, tier2_metrics


def _val(path: Path) -> list[tuple[str, str]]:
    return [(r["text"], r["intent"]) for r in map(json.loads, path.read_text().splitlines())]


def _decision(guess: str, tier: str = "embedding", intent: str | None = None, escalate: bool = True,
              oos: bool = False, latency: float = 0.0, degraded: bool = False) -> Decision:
    call = LLMCall("b", "m", latency, 100, 2, 80) if tier == TIER_LLM else None
    return Decision(intent=intent if tier == TIER_LLM else guess, out_of_scope=oos, confidence=0.5, tier=tier,
                    escalate=escalate, candidates=[Candidate(guess, 0.5)], llm=call, degraded=degraded)


def test_metrics_compare_llm_and_tier1_on_exactly_the_escalated_slice() -> None:
    decisions = [
        _decision("a", escalate=False),                              # accepted by tier 1, right
        _decision("a", TIER_LLM, "b", escalate=False, latency=10),   # LLM fixed tier 1's mistake
        _decision("c", TIER_LLM, None, escalate=False, oos=True, latency=30),  # LLM said none: right
        _decision("d", TIER_LLM, "x", escalate=False, latency=20),   # LLM wrong, tier 1 was right
        _decision("e", degraded=True),                                              # degraded: tier 1's guess stands
    ]
    truth = ["a", "b", "oos", "d", "e"]
    m = tier2_metrics(decisions, truth)
    assert m["escalation_rate"] == 0.8 and m["n_escalated"] == 4
    assert m["llm_slice_accuracy"] == 0.75 and m["tier1_slice_accuracy"] == 0.5
    assert m["end_to_end_accuracy"] == 0.8 and m["end_to_end_accuracy_tier1"] == 0.6
    assert m["llm_calls"] == 3 and m["llm_degraded"] == 1 and m["llm_none_answers"] == 1
    assert m["llm_latency_p50_ms"] == 20.0 and m["llm_prompt_tokens_mean"] == 100.0


def test_gate_decision_and_status() -> None:
    win = decide_gate({"llm_slice_accuracy": 0.6, "tier1_slice_accuracy": 0.5, "n_escalated": 10,
                       "llm_degraded": 0}, "vllm", "qwen")
    tie = decide_gate({"llm_slice_accuracy": 0.5, "tier1_slice_accuracy": 0.5, "n_escalated": 10,
                       "llm_degraded": 0}, "vllm", "qwen")
    assert win.enabled and not tie.enabled and "does not beat tier 1 50.0%" in tie.reason
    config = LLMConfig(backends=[{"backend": "vllm", "url": "http://x/v1", "model": "qwen"}])
    assert gate_status(config, tie) == (False, "off: " + tie.reason)
    assert gate_status(config.model_copy(update={"gate": "on"}), tie)[0]
    other = config.model_copy(update={"backends": [config.backends[0].model_copy(update={"model": "llama"})]})
    assert gate_status(other, tie)[0]  # a measurement of another model does not switch this one off
    assert gate_status(config, None)[0]


def _build_with(tmp_path: Path, mini_config: RouterConfig, answers: dict[str, str]) -> Path:
    llm = LLMConfig(backends=[{"backend": "memory", "answers": answers}])
    config = mini_config.model_copy(update={"llm": llm})
    return Builder(config).build(tmp_path / "gated").folder


def test_a_backend_that_beats_tier1_stays_on(tmp_path: Path, mini_config: RouterConfig, mini_val: Path) -> None:
    truth = {text: ("none" if label == "oos" else label) for text, label in _val(mini_val)}
    folder = _build_with(tmp_path, mini_config, truth)
    gate = json.loads((folder / "manifest.json").read_text())["llm_gate"]
    assert gate["enabled"] and gate["n_escalated"] > 0
    assert gate["llm_slice_accuracy"] > gate["tier1_slice_accuracy"]
    router = Router.load(folder)
    try:
        assert router.tier2 is not None and router.escalator is not None
        assert router.escalator.status.startswith("on: memory")
    finally:
        router.close()


def test_a_backend_that_does_not_beat_tier1_is_switched_off(tmp_path: Path, mini_config: RouterConfig,
                                                              mini_val: Path) -> None:
    names = ["balance", "transfer", "weather", "book_flight", "translate", "alarm", "greeting", "order_status"]
    wrong = {text: names[(names.index(label) + 1) % len(names)] if label in names else "balance"
             for text, label in _val(mini_val)}
    folder = _build_with(tmp_path, mini_config, wrong)
    gate = json.loads((folder / "manifest.json").read_text())["llm_gate"]
    assert not gate["enabled"] and "does not beat tier 1" in gate["reason"]
    router = Router.load(folder)
    try:
        assert router.tier2 is None
        assert router.escalator is not None and router.escalator.status.startswith("off: memory")
        assert router.classify("clock").escalate  # stays escalated: the caller decides
    finally:
        router.close()
