"""The skill dispatcher: per-skill, per-stage model choice (the model-routing file) for premium
providers, made safe: budgets, approvals, retries, fallbacks, breakers, a trace.

What a user writes or reads is exported here; the rest (the caller, the steps, the trace sinks)
sits in private modules. Model calls go through ``router.providers``; budgets, approvals and
breakers live in a ``router.state`` backend (memory by default, or Redis). Imports stay light
(httpx, pydantic, tenacity); nothing connects until the first call.
"""

from router.dispatch._caller import CallResult, StreamCall
from router.dispatch._config import (
    ModelRoutingConfig,
    Price,
    TraceConfig,
    load_model_routing,
    model_routing_from_dict,
)
from router.dispatch._dispatcher import Dispatcher
from router.dispatch._result import CallSummary, DispatchResult
from router.dispatch._skills import Skill, SkillContext, SkillRegistry, load_registry
from router.dispatch._trace import read_jsonl, session_totals
from router.providers import ProviderConfig, RetryConfig
from router.state import BudgetConfig, PendingAction, SessionTotals, StateConfig

__all__ = [
    "BudgetConfig",
    "CallResult",
    "CallSummary",
    "DispatchResult",
    "Dispatcher",
    "ModelRoutingConfig",
    "PendingAction",
    "Price",
    "ProviderConfig",
    "RetryConfig",
    "SessionTotals",
    "Skill",
    "SkillContext",
    "SkillRegistry",
    "StateConfig",
    "StreamCall",
    "TraceConfig",
    "load_model_routing",
    "load_registry",
    "model_routing_from_dict",
    "read_jsonl",
    "session_totals",
]
