"""Tier 1b: the transformer encoder, the FAISS index of examples and the calibrated linear head.

Every query that reaches it gets a Decision: accepted, out of scope (far from every example),
or escalated with its best guess (left pending for tier 2, when there is one).
"""

from __future__ import annotations

from time import perf_counter_ns
from typing import cast

import numpy as np

from router._artifact import IndexArtifact
from router._decision import TIER_EMBEDDING, Candidate, Decision
from router.encoders import Encoder, TokenEncoder, token_encoder
from router.tiers._base import Query, TierKind, elapsed_us, top_classes


class EmbeddingTier:
    name = "embedding"
    kind: TierKind = "compute"

    def __init__(self, artifact: IndexArtifact, encoder: Encoder, skills: dict[str, str | None], top_k: int) -> None:
        self.artifact = artifact
        self.encoder = encoder
        # The encoder itself (its cache included, which forwards encode_with_ids) when the encoder
        # behind it can reuse the static tier's token ids.
        self._tokens = cast(TokenEncoder, encoder) if token_encoder(encoder) is not None else None
        self._skills = skills
        self.top_k = top_k
        cal = artifact.manifest.calibration
        self.accept_threshold = cal.accept_threshold
        self.oos_floor = cal.oos_similarity_floor
        self._neighbours = min(artifact.config.vector_index.neighbours, len(artifact.examples))
        # Learned out-of-scope examples (router/learn/): a query nearer to one of them than to any example
        # of its best intent is out of scope. None until feedback teaches one.
        self._oos = artifact.oos_examples if artifact.oos_examples is not None and len(artifact.oos_examples) else None

    def _encode(self, queries: list[Query]) -> np.ndarray:
        texts = [q.text for q in queries]
        ids = [q.ids for q in queries]
        if self._tokens is not None and all(i is not None for i in ids):
            return self._tokens.encode_with_ids(texts, [i for i in ids if i is not None])
        return self.encoder.encode(texts)

    def settle(self, queries: list[Query]) -> None:
        start = perf_counter_ns()
        vectors = self._encode(queries)
        encoded = perf_counter_ns()
        nearest = self.artifact.vectors.search(vectors, self._neighbours)[0][:, 0]
        # In float64: a float32 product's rounding depends on how many rows it has (BLAS picks other
        # kernels), which moved scores in the 6th decimal with the batch a query happened to share.
        probs = self.artifact.head.probabilities(vectors.astype(np.float64))
        oos_near = None if self._oos is None else (vectors @ self._oos.T).max(axis=1)
        encode_us = elapsed_us(start, encoded) / len(queries)
        search_us = elapsed_us(encoded, perf_counter_ns()) / len(queries)
        for row, q in enumerate(queries):
            t = perf_counter_ns()
            decision = self._decision(q, vectors[row], probs[row], float(nearest[row]),
                                      None if oos_near is None else float(oos_near[row]))
            q.latency_us["encode"] = round(encode_us, 1)
            q.latency_us["embedding"] = round(search_us + elapsed_us(t, perf_counter_ns()), 1)
            q.decision = decision
            q.done = not decision.escalate

    def _decision(self, q: Query, vector: np.ndarray, probs: np.ndarray, nearest: float,
                  oos_near: float | None = None) -> Decision:
        art = self.artifact
        candidates = []
        for cls in top_classes(probs, self.top_k):
            lo, hi = art.offsets[cls], art.offsets[cls + 1]
            sim = float((art.examples[lo:hi] @ vector).max())
            candidates.append(Candidate(art.head_intents[cls], round(float(probs[cls]), 6), round(sim, 6)))
        best = candidates[0]
        score = best.score * max(best.similarity or 0.0, 0.0)
        out_of_scope = nearest < self.oos_floor or (oos_near is not None and oos_near > (best.similarity or 0.0))
        accepted = not out_of_scope and score >= self.accept_threshold
        return Decision(
            intent=None if out_of_scope else best.intent,
            out_of_scope=out_of_scope,
            confidence=round(score, 6),
            tier=TIER_EMBEDDING,
            escalate=not accepted and not out_of_scope,
            candidates=candidates,
            flags=q.flags,
            latency_us=q.latency_us,
            skill=None if out_of_scope else self._skills.get(best.intent),
        )

    async def asettle(self, queries: list[Query]) -> None:
        import asyncio

        await asyncio.to_thread(self.settle, queries)
