"""The Router: tier 0 (rules) then tier 1 (embeddings) over a built index."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter_ns

import numpy as np

from router.artifact import IndexArtifact, check_fresh, load_artifact, read_manifest
from router.config import EncoderConfig, LimitsConfig, RouterConfig, load_config
from router.decision import TIER_EMBEDDING, TIER_RULES, Candidate, Decision
from router.encoders import Encoder, build_encoder, encoder_identity
from router.errors import IndexError_
from router.intents import IntentSet
from router.paths import indexes_dir
from router.rules import RuleMatch, RuleSet
from router.validation import check_batch, check_text


def _us(start_ns: int, end_ns: int) -> float:
    return round((end_ns - start_ns) / 1000.0, 1)


class Router:
    """Classify texts into intents. Build one with ``Router.load`` or ``Router.from_config``."""

    def __init__(
        self,
        artifact: IndexArtifact,
        encoder: Encoder,
        limits: LimitsConfig | None = None,
        top_k: int | None = None,
    ) -> None:
        self.artifact = artifact
        self.encoder = encoder
        self.limits = limits or artifact.config.limits
        self.top_k = min(top_k or artifact.config.top_k, len(artifact.head_intents))
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
    ) -> Router:
        """Load a built index by name (under ``indexes/``) or by folder path.

        ``encoder`` overrides serving settings (threads, cache); its model must be the one the
        index was built with. Passing ``intents`` also checks the index was built from them.
        """
        folder = Path(index) if Path(index).is_dir() or "/" in str(index) else indexes_dir(index_dir) / str(index)
        manifest = read_manifest(folder)
        built = RouterConfig.model_validate_json((folder / "config.json").read_text())
        enc_config = encoder or built.encoder
        check_fresh(manifest, encoder_identity(enc_config), intents, folder)
        artifact = load_artifact(folder, {"ef_search": built.vector_index.ef_search})
        return cls(artifact, build_encoder(enc_config), limits, top_k)

    @classmethod
    def from_config(cls, path: str | Path, index_dir: str | Path | None = None) -> Router:
        """Load the index a YAML config describes, refusing it if the config's intents have changed."""
        from router.builder import resolve_sources

        config = load_config(path)
        folder = indexes_dir(index_dir) / config.name
        if not (folder / "manifest.json").is_file():
            raise IndexError_(f"no index at {folder} for config {path}; build it with: router build --config {path}")
        return cls.load(folder, encoder=config.encoder, intents=resolve_sources(config).intents,
                        limits=config.limits, top_k=config.top_k)

    # -- classification -----------------------------------------------------------------------
    def classify(self, text: str) -> Decision:
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
        return await asyncio.to_thread(self.classify, text)

    async def aclassify_batch(self, texts: Sequence[str]) -> list[Decision]:
        return await asyncio.to_thread(self.classify_batch, texts)

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
