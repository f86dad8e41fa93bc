"""Tier 1a: the static token table. A lookup, a sum and a linear head: tens of µs, no transformer.

Tokenises every pending query once (the ids stay on the query for tier 1b), embeds the batch with
one gather, scores it with one matrix product, and settles the queries whose acceptance score
and out-of-scope check pass the static tier's own calibration. The rest go on unchanged.
"""

from __future__ import annotations

from time import perf_counter_ns

import numpy as np

from router._calibration import Calibration
from router._decision import TIER_STATIC, Candidate, Decision
from router.encoders._base import TokenEncoder
from router.static._model import StaticModel
from router.tiers._base import Query, TierKind, elapsed_us, top_classes


class StaticTier:
    name = "static"
    kind: TierKind = "inline"

    def __init__(self, model: StaticModel, calibration: Calibration, tokenizer: TokenEncoder,
                 head_intents: list[str], skills: dict[str, str | None], top_k: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.threshold = calibration.accept_threshold
        self.floor = calibration.oos_similarity_floor
        self._intents = head_intents
        self._skills = skills
        self.top_k = min(top_k, len(head_intents))
        self._examples = model.examples
        self._offsets = model.offsets
        # Learned out-of-scope examples in the table's space: an answer nearer to one of them than to its
        # intent's examples is not the static tier's to give (tier 1b decides it).
        self._oos = model.oos_examples if model.oos_examples is not None and len(model.oos_examples) else None

    def _similarity(self, cls: int, vector: np.ndarray) -> float:
        lo, hi = self._offsets[cls], self._offsets[cls + 1]
        return float((self._examples[lo:hi] @ vector).max())

    def settle(self, queries: list[Query]) -> None:
        start = perf_counter_ns()
        missing = [q for q in queries if q.ids is None]
        if missing:
            for q, ids in zip(missing, self.tokenizer.token_ids([q.text for q in missing]), strict=True):
                q.ids = ids
        vectors = self.model.table.embed([q.ids for q in queries if q.ids is not None])
        probs = self.model.head.probabilities(vectors)
        best = probs.argmax(axis=1)
        shared = elapsed_us(start, perf_counter_ns()) / len(queries)  # one batched pass, split evenly
        for row, q in enumerate(queries):
            t = perf_counter_ns()
            cls = int(best[row])
            sim = self._similarity(cls, vectors[row])
            score = float(probs[row, cls]) * max(sim, 0.0)
            if score >= self.threshold and sim >= self.floor and (
                    self._oos is None or float((self._oos @ vectors[row]).max()) <= sim):
                q.settle(self._decision(q, probs[row], sim, score))
            q.latency_us["static"] = round(shared + elapsed_us(t, perf_counter_ns()), 1)

    def _decision(self, q: Query, probs: np.ndarray, similarity: float, score: float) -> Decision:
        top = top_classes(probs, self.top_k)
        # Only the best candidate's similarity is computed: each one costs a block product on the hot path.
        candidates = [Candidate(self._intents[c], round(float(probs[c]), 6)) for c in top]
        candidates[0].similarity = round(similarity, 6)
        intent = candidates[0].intent
        return Decision(intent=intent, out_of_scope=False, confidence=round(score, 6), tier=TIER_STATIC,
                        escalate=False, candidates=candidates, flags=q.flags, latency_us=q.latency_us,
                        skill=self._skills.get(intent))

    async def asettle(self, queries: list[Query]) -> None:
        self.settle(queries)
