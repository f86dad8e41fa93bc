"""The compared methods behind one Protocol, in ``METHODS``, a ``Registry`` keyed by the name the CLI takes.

Each module imports its heavy or optional dependency (semantic-router, an LLM backend, torch)
only when the method is built.
"""

from router._registry import Registry
from router.bench.methods import _every_turn as every_turn
from router.bench.methods import _http as http
from router.bench.methods import _semantic as semantic
from router.bench.methods import _tiered as tiered
from router.bench.methods._base import Method, MethodContext, MethodFactory, Outcome

METHODS: Registry[MethodFactory] = Registry("bench method", "methods", {
    "tiers01": tiered.tiers01,
    "tiers01-finetuned": tiered.tiers01_finetuned,
    "tiers01-static-off": tiered.tiers01_static_off,
    "tiers01-http": http.over_http,
    "tier2": tiered.with_tier2,
    "semantic-router": semantic.default,
    "semantic-router-fitted": semantic.fitted,
    "llm-every-turn": every_turn.every_turn,
})

# Methods whose extra may be missing: a ``MissingDependency`` from their build skips the row, with its
# message as the report's note, instead of failing the whole comparison.
OPTIONAL = {"tiers01-finetuned"}

__all__ = ["METHODS", "OPTIONAL", "Method", "MethodContext", "MethodFactory", "Outcome"]
