"""The Router: tier 0 (rules) then tier 1 (embeddings) over a built index."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter_ns
from typing import TYPE_CHECKING, Literal

import numpy as np

from router.artifact import IndexArtifact, check_fresh, load_artifact, read_manifest
from router.config import EncoderConfig, LimitsConfig, RouterConfig, load_config
from router.decision import TIER_EMBEDDING, TIER_RULES, Candidate, Decision
from router.encoders import Encoder, build_encoder, encoder_identity
from router.errors import IndexError_
from router.intents import IntentSet
from router.llm.config import LLMConfig
from router.llm.gate import gate_status
from router.paths import indexes_dir
from router.rules import RuleMatch, RuleSet
from router.validation import check_batch, check_text

if TYPE_CHECKING:
    from router.llm import LLMClient
    from router.llm.escalator import Escalator


def _us(start_ns: int, end_ns: int) -> float:
    return round((end_ns - start_ns) / 1000.0, 1)


def index_folder(index: str | Path, index_dir: str | Path | None = None) -> Path:
    """An index by folder path, or by name under ``indexes/``."""
    return Path(index) if Path(index).is_dir() or "/" in str(index) else indexes_dir(index_dir) / str(index)


def built_config(folder: Path) -> RouterConfig:
    """The config an index was built with (its ``config.json``)."""
    return RouterConfig.model_validate_json((folder / "config.json").read_text())


def _escalated(texts: Sequence[str], decisions: list[Decision]) -> dict[int, tuple[str, Decision]]:
    return {i: (texts[i], d) for i, d in enumerate(decisions) if d.escalate}


def _splice(decisions: list[Decision], escalated: dict[int, tuple[str, Decision]], settled: list[Decision]) -> None:
    for i, d in zip(escalated, settled, strict=True):
        decisions[i] = d


class Router:
    """Classify texts into intents. Build one with ``Router.load`` or ``Router.from_config``."""

    def __init__(
        self,
        artifact: IndexArtifact,
        encoder: Encoder,
        limits: LimitsConfig | None = None,
        top_k: int | None = None,
        escalator: Escalator | None = None,
    ) -> None:
        self.artifact = artifact
        self.escalator = escalator
        self.encoder = encoder
        self.limits = limits or artifact.config.limits
        # Tier 2 offers its own top_k candidates, so the Decision carries at least that many.
        wanted = max(top_k or artifact.config.top_k, escalator.config.top_k if escalator is not None else 0)
        self.top_k = min(wanted, len(artifact.head_intents))
        self.rules = RuleSet(artifact.rules, None if artifact.config.rules.guards else {})
        cal = artifact.manifest.calibration
        self.accept_threshold = cal.accept_threshold
        self.oos_floor = cal.oos_similarity_floor
        self._neighbours = min(artifact.config.vector_index.neighbours, len(artifact.examples))
        self._skills = {i.name: i.skill for i in artifact.intents.intents}

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        index: str | Path = "default",
        *,
        index_dir: str | Path | None = None,
        encoder: EncoderConfig | None = None,
        intents: IntentSet | None = None,
        limits: LimitsConfig | None = None,
        top_k: int | None = None,
        llm: LLMConfig | Literal["built", "off"] = "built",
        llm_clients: Sequence[LLMClient] | None = None,
    ) -> Router:
        """Load a built index by name (under ``indexes/``) or by folder path.

        ``encoder`` overrides serving settings (threads, cache); its model must be the one the
        index was built with. Passing ``intents`` also checks the index was built from them.
        ``llm`` is tier 2: the config the index was built with (``"built"``, none unless it had
        an ``llm`` section), another ``LLMConfig``, or ``"off"``. ``llm_clients`` replaces the
        clients the config would build (tests, custom backends).
        """
        folder = index_folder(index, index_dir)
        manifest = read_manifest(folder)
        built = built_config(folder)
        enc_config = encoder or built.encoder
        check_fresh(manifest, encoder_identity(enc_config), intents, folder)
        artifact = load_artifact(folder, {"ef_search": built.vector_index.ef_search})
        llm_config = built.llm if llm == "built" else None if llm == "off" else llm
        escalator = None
        if llm_config is not None:
            from router.llm.escalator import Escalator

            escalator = Escalator(llm_config, artifact.intents, llm_clients)
            escalator.enabled, escalator.status = gate_status(llm_config, manifest.llm_gate)
        return cls(artifact, build_encoder(enc_config), limits, top_k, escalator)

    @classmethod
    def from_config(cls, path: str | Path, index_dir: str | Path | None = None) -> Router:
        """Load the index a YAML config describes, refusing it if the config's intents have changed."""
        from router.builder import resolve_sources

        config = load_config(path)
        folder = indexes_dir(index_dir) / config.name
        if not (folder / "manifest.json").is_file():
            raise IndexError_(f"no index at {folder} for config {path}; build it with: router build --config {path}")
        return cls.load(folder, encoder=config.encoder, intents=resolve_sources(config).intents,
                        limits=config.limits, top_k=config.top_k, llm=config.llm or "off")

    @property
    def tier2(self) -> Escalator | None:
        """The escalator when tier 2 is configured and switched on, else None."""
        return self.escalator if self.escalator is not None and self.escalator.enabled else None

    def close(self) -> None:
        """Release tier 2's thread, connections and model; tier 2 is unusable afterwards."""
        if self.escalator is not None:
            self.escalator.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- classification -----------------------------------------------------------------------
    def classify(self, text: str) -> Decision:
        decision = self.classify_fast(text)
        tier2 = self.tier2
        if decision.escalate and tier2 is not None:
            return tier2.resolve(text, decision)
        return decision

    def classify_fast(self, text: str) -> Decision:
        """Tiers 0 and 1 only: an escalated query comes back with ``escalate`` set."""
        start = perf_counter_ns()
        text = check_text(text, self.limits.max_text_chars)
        rule = self.rules.match(text)
        ruled = perf_counter_ns()
        if rule.intent is not None:
            return self._rule_decision(rule, start, ruled)
        vector = self.encoder.encode([text])
        encoded = perf_counter_ns()
        return self._embedding_decision(vector, rule, start, ruled, encoded)

    def classify_batch(self, texts: Sequence[str]) -> list[Decision]:
        decisions = self.classify_batch_fast(texts)
        tier2 = self.tier2
        escalated = _escalated(texts, decisions)
        if escalated and tier2 is not None:
            _splice(decisions, escalated, tier2.resolve_many(list(escalated.values())))
        return decisions

    def classify_batch_fast(self, texts: Sequence[str]) -> list[Decision]:
        """Tiers 0 and 1 for a batch, encoding every text that reaches tier 1 in one call."""
        start = perf_counter_ns()
        texts = check_batch(texts, self.limits.max_batch, self.limits.max_text_chars)
        matches = [self.rules.match(t) for t in texts]
        ruled = perf_counter_ns()
        pending = [i for i, m in enumerate(matches) if m.intent is None]
        decisions: list[Decision | None] = [None] * len(texts)
        for i, m in enumerate(matches):
            if m.intent is not None:
                decisions[i] = self._rule_decision(m, start, ruled)
        if pending:
            vectors = self.encoder.encode([texts[i] for i in pending])
            encoded = perf_counter_ns()
            for row, i in enumerate(pending):
                decisions[i] = self._embedding_decision(vectors[row : row + 1], matches[i], start, ruled, encoded)
        return [d for d in decisions if d is not None]

    async def aclassify(self, text: str) -> Decision:
        decision = await asyncio.to_thread(self.classify_fast, text)
        tier2 = self.tier2
        if decision.escalate and tier2 is not None:
            return await tier2.aresolve(text, decision)
        return decision

    async def aclassify_batch(self, texts: Sequence[str]) -> list[Decision]:
        decisions = await asyncio.to_thread(self.classify_batch_fast, texts)
        return await self.aescalate(texts, decisions)

    async def aescalate(self, texts: Sequence[str], decisions: list[Decision]) -> list[Decision]:
        """Settle the escalated ones of tier-1 ``decisions`` (in place) through tier 2, if it is on."""
        tier2 = self.tier2
        escalated = _escalated(texts, decisions)
        if escalated and tier2 is not None:
            _splice(decisions, escalated, await tier2.aresolve_many(list(escalated.values())))
        return decisions

    # -- tiers ---------------------------------------------------------------------------------
    def _rule_decision(self, rule: RuleMatch, start: int, ruled: int) -> Decision:
        intent = rule.intent
        assert intent is not None
        return Decision(
            intent=intent,
            out_of_scope=False,
            confidence=1.0,
            tier=TIER_RULES,
            escalate=False,
            candidates=[Candidate(intent, 1.0)],
            slots=rule.slots,
            flags=rule.flags,
            latency_us={"rules": _us(start, ruled), "total": _us(start, perf_counter_ns())},
            skill=self._skills.get(intent),
        )

    def _embedding_decision(self, vector: np.ndarray, rule: RuleMatch, start: int, ruled: int,
                            encoded: int) -> Decision:
        art = self.artifact
        probs = art.head.probabilities(vector)[0]
        k = self.top_k
        top = np.argpartition(-probs, k - 1)[:k] if k < len(probs) else np.arange(len(probs))
        top = top[np.argsort(-probs[top], kind="stable")]
        q = vector[0]
        candidates = []
        for cls in top:
            lo, hi = art.offsets[cls], art.offsets[cls + 1]
            sim = float((art.examples[lo:hi] @ q).max())
            candidates.append(Candidate(art.head_intents[cls], round(float(probs[cls]), 6), round(sim, 6)))
        nearest = float(art.vectors.search(vector, self._neighbours)[0][0, 0])
        best = candidates[0]
        score = best.score * max(best.similarity or 0.0, 0.0)
        out_of_scope = nearest < self.oos_floor
        accepted = not out_of_scope and score >= self.accept_threshold
        done = perf_counter_ns()
        return Decision(
            intent=None if out_of_scope else best.intent,
            out_of_scope=out_of_scope,
            confidence=round(score, 6),
            tier=TIER_EMBEDDING,
            escalate=not accepted and not out_of_scope,
            candidates=candidates,
            slots={},
            flags=rule.flags,
            latency_us={
                "rules": _us(start, ruled),
                "encode": _us(ruled, encoded),
                "embedding": _us(encoded, done),
                "total": _us(start, done),
            },
            skill=None if out_of_scope else self._skills.get(best.intent),
        )
