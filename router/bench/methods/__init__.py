"""The compared methods behind one Protocol, in a registry keyed by the name the CLI takes.

Each module imports its heavy or optional dependency (semantic-router, an LLM backend) only
when the method is built.
"""

from router.bench.methods import every_turn, http, semantic, tiered
from router.bench.methods.base import Method, MethodContext, MethodFactory, Outcome

METHODS: dict[str, MethodFactory] = {
    "tiers01": tiered.tiers01,
    "tiers01-static-off": tiered.tiers01_static_off,
    "tiers01-http": http.over_http,
    "tier2": tiered.with_tier2,
    "semantic-router": semantic.default,
    "semantic-router-fitted": semantic.fitted,
    "llm-every-turn": every_turn.every_turn,
}

__all__ = ["METHODS", "Method", "MethodContext", "MethodFactory", "Outcome"]
