"""The tiers of the pipeline, in the order a query meets them, behind one small Protocol.

``rules`` (tier 0) → ``static`` (tier 1a) → ``embedding`` (tier 1b) → ``llm`` (tier 2). Each is
built from the loaded index and the config by its entry in ``TIERS`` (a ``Registry``); an entry returns None when
its tier is not configured, so the chain holds only the tiers that will run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router._registry import Registry
from router.tiers._base import Query, Tier, TierKind
from router.tiers._chain import ALL_KINDS, COMPUTE, INLINE, IO, LOCAL, Chain

if TYPE_CHECKING:
    from router._artifact import IndexArtifact
    from router.encoders import Encoder
    from router.llm._escalator import Escalator


@dataclass
class TierContext:
    """What a tier may be built from."""

    artifact: IndexArtifact
    encoder: Encoder
    escalator: Escalator | None
    skills: dict[str, str | None]  # intent -> skill (Intent.skill, else the intent's name): the one map
    top_k: int


def _rules(ctx: TierContext) -> Tier:
    from router._rules import RuleSet
    from router.tiers._rules import RulesTier

    art = ctx.artifact
    rules = art.config.rules
    return RulesTier(RuleSet(art.rules, None if rules.guards else {}, rules.match_timeout_ms / 1000), ctx.skills)


def _static(ctx: TierContext) -> Tier | None:
    from router.encoders import token_encoder
    from router.errors import ConfigError
    from router.tiers._static import StaticTier

    art = ctx.artifact
    if art.static is None or art.manifest.static is None:
        return None
    tokenizer = token_encoder(ctx.encoder)
    if tokenizer is None:
        raise ConfigError(f"the static tier needs an encoder that exposes its tokenizer; "
                          f"encoder {ctx.encoder.encoder_id!r} does not (serve with --static off)")
    return StaticTier(art.static, art.manifest.static.calibration, tokenizer, art.head_intents, ctx.skills, ctx.top_k)


def _embedding(ctx: TierContext) -> Tier:
    from router.tiers._embedding import EmbeddingTier

    return EmbeddingTier(ctx.artifact, ctx.encoder, ctx.skills, ctx.top_k)


def _llm(ctx: TierContext) -> Tier | None:
    from router.tiers._llm import LLMTier

    esc = ctx.escalator
    return LLMTier(esc, ctx.skills) if esc is not None and esc.enabled else None


# In chain order: a registry iterates in insertion order.
TIERS: Registry[Callable[[TierContext], Tier | None]] = Registry("tier", "tiers", {
    "rules": _rules,
    "static": _static,
    "embedding": _embedding,
    "llm": _llm,
})


def build_chain(ctx: TierContext) -> Chain:
    return Chain([tier for name in TIERS if (tier := TIERS.get(name)(ctx)) is not None])


__all__ = [
    "ALL_KINDS", "COMPUTE", "INLINE", "IO", "LOCAL", "TIERS",
    "Chain", "Query", "Tier", "TierContext", "TierKind", "build_chain",
]
