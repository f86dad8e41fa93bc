"""The methods one by one, where the end-to-end slice cannot reach: answers, failures, the encoder."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from router._builder import BuildReport
from router._config import EncoderConfig, FinetuneConfig, RouterConfig
from router._decision import TIER_EMBEDDING, TIER_LLM, TIER_RULES, TIER_STATIC, Candidate, Decision
from router.bench._data import load_bench_data
from router.bench._plots import TIER_COLOURS, TIER_ORDER
from router.bench._runner import CompareConfig, run_compare
from router.bench.methods import METHODS, OPTIONAL, MethodContext
from router.bench.methods import _tiered as tiered
from router.bench.methods._semantic import _encoder_class
from router.bench.methods._tiered import FineTuned, Tiered, outcome_of
from router.encoders import build_encoder
from router.errors import MissingDependency
from router.llm._config import LLMBackendConfig, LLMConfig
from router.train._record import FinetuneRecord

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


# -- the fine-tuned row: registered, skipped without the [train] extra; no test here fine-tunes ----------------

FINETUNED = "tiers01-finetuned"
NO_TORCH = "router build --finetune needs torch and transformers (torch is missing): pip install 'tiered-router[train]'"


def _no_torch() -> None:
    raise MissingDependency(NO_TORCH)


class _NoBuild:
    """Stands in for the Builder: records the config it was given, builds nothing."""

    configs: list[RouterConfig] = []

    def __init__(self, config: RouterConfig) -> None:
        self.configs.append(config)

    def build(self, folder: Path) -> BuildReport:
        raise AssertionError("no build in this test")


def test_the_fine_tuned_row_is_registered_optional_and_in_the_default_run(tmp_path: Path) -> None:
    assert FINETUNED in METHODS and FINETUNED in OPTIONAL
    assert OPTIONAL <= set(METHODS)
    assert FINETUNED in CompareConfig(out=tmp_path).methods
    method = METHODS[FINETUNED](context(tmp_path), None)
    assert isinstance(method, FineTuned) and method.name == "tiered-router, tiers 0-1, fine-tuned"
    method.close()


def test_without_torch_the_fine_tuned_build_names_the_install_command_and_builds_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("router.train._loop.import_torch", _no_torch)
    monkeypatch.setattr(tiered, "Builder", _NoBuild)
    _NoBuild.configs = []
    ctx = context(tmp_path)
    method = METHODS[FINETUNED](ctx, None)
    with pytest.raises(MissingDependency, match=r"pip install 'tiered-router\[train\]'"):
        method.build()
    method.close()
    assert _NoBuild.configs == [] and ctx.shared == {}


def test_the_fine_tuned_row_builds_the_tiers01_config_with_finetune_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("router.train._loop.import_torch", lambda: None)
    monkeypatch.setattr(tiered, "Builder", _NoBuild)
    _NoBuild.configs = []
    ctx = context(tmp_path)
    ctx.finetune_epochs = 2
    with pytest.raises(AssertionError, match="no build in this test"):
        METHODS[FINETUNED](ctx, None).build()
    (config,) = _NoBuild.configs
    assert config.finetune == FinetuneConfig(epochs=2)
    assert config.model_copy(update={"finetune": None}) == tiered.bench_config(ctx)


def _record(cached: bool) -> FinetuneRecord:
    return FinetuneRecord(
        base_model="minilm-l6-fp32", base_encoder_id="minilm-l6-fp32@abc", base_weights_sha256="a" * 64,
        tokenizer_sha256="d" * 64,
        configured_encoder_id="minilm-l6-int8@def", tuned_weights_sha256="b" * 64, config=FinetuneConfig(epochs=3),
        data_sha256="c" * 64, heldout="validation", n_train=100, n_heldout=20, best_epoch=2,
        heldout_accuracy=[0.9, 0.95], epoch_seconds=[100.0, 110.0], loss=[1.0, 0.5],
        seconds=1.5 if cached else 215.0, cached=cached)


@pytest.mark.parametrize("cached", [False, True])
def test_the_fine_tuned_build_time_includes_the_fine_tune_and_the_notes_say_how_it_went(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool) -> None:
    monkeypatch.setattr("router.train._loop.import_torch", lambda: None)
    loaded: list[Path] = []
    monkeypatch.setattr(tiered.Router, "load", lambda folder, **_: loaded.append(folder))
    ctx = context(tmp_path)
    manifest = SimpleNamespace(build_seconds=250.0, finetune=_record(cached))
    ctx.shared["tiered_index_finetuned"] = BuildReport(tmp_path / "index", manifest)  # type: ignore[arg-type]
    method = METHODS[FINETUNED](ctx, None)
    seconds = method.build()
    assert loaded == [tmp_path / "index"]
    # A cached run's build is short: the training time it saved is added back, as a fresh machine waits for it.
    assert seconds == pytest.approx(250.0 + (210.0 if cached else 0.0), abs=1.0)
    notes = "; ".join(method.notes)
    assert "2 of 3 epoch(s) run: 100 s, 110 s; best epoch 2, held-out accuracy 0.9500" in notes
    assert "held out: the validation split, never trained on" in notes
    assert ("reused from the model cache" in notes) == cached
    assert "served torch-free" in notes


def _only_finetuned(out: Path) -> CompareConfig:
    return CompareConfig(out=out, datasets=["clinc150"], methods=[FINETUNED], max_intents=3, train_per_intent=8,
                         test_limit=20, scaling_sizes=[], llm=LLMBackendConfig(backend="memory"))


def test_the_runner_skips_only_optional_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("router.train._loop.import_torch", _no_torch)
    monkeypatch.setattr("router.bench._report.write_plots", lambda results, folder: None)  # no rows to plot
    lines: list[str] = []
    results = run_compare(_only_finetuned(tmp_path / "a"), lines.append)
    assert results["datasets"]["clinc150"]["runs"] == []
    assert results["datasets"]["clinc150"]["skipped"][0]["reason"] == NO_TORCH
    assert any("fine-tuned: skipped" in line for line in lines)
    assert "skipped, not run: router build --finetune needs torch" in (tmp_path / "a" / "report.md").read_text()
    # A method not marked optional still fails the run with its MissingDependency.
    monkeypatch.setattr("router.bench._runner.OPTIONAL", set())
    with pytest.raises(MissingDependency, match="tiered-router"):
        run_compare(_only_finetuned(tmp_path / "b"), lines.append)
