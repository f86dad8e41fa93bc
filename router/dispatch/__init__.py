"""The skill dispatcher: per-skill, per-stage model routing to premium providers, made safe.

Imports stay light (httpx, pydantic, tenacity); nothing connects until the first call.
"""

from router.dispatch.approvals import ApprovalStore, PendingAction
from router.dispatch.budget import Ledger, SessionTotals
from router.dispatch.caller import CallResult, ModelCaller
from router.dispatch.config import (
    STAGES,
    BudgetConfig,
    ModelRef,
    ModelRoutingConfig,
    Price,
    TraceConfig,
    load_model_routing,
    model_routing_from_dict,
)
from router.dispatch.dispatcher import Dispatcher
from router.dispatch.pricing import call_cost
from router.dispatch.result import CallSummary, DispatchResult
from router.dispatch.skills import Skill, SkillContext, SkillRegistry, load_registry
from router.dispatch.trace import TRACE_SINKS, JsonlSink, MemorySink, TraceSink, read_jsonl, session_totals
from router.providers import (
    PROVIDERS,
    Attempt,
    ChatRequest,
    Completion,
    Message,
    Provider,
    ProviderConfig,
    RetryConfig,
    Usage,
)

__all__ = [
    "PROVIDERS",
    "STAGES",
    "TRACE_SINKS",
    "ApprovalStore",
    "Attempt",
    "BudgetConfig",
    "CallResult",
    "CallSummary",
    "ChatRequest",
    "Completion",
    "DispatchResult",
    "Dispatcher",
    "JsonlSink",
    "Ledger",
    "MemorySink",
    "Message",
    "ModelCaller",
    "ModelRef",
    "PendingAction",
    "Price",
    "Provider",
    "ProviderConfig",
    "RetryConfig",
    "ModelRoutingConfig",
    "SessionTotals",
    "Skill",
    "SkillContext",
    "SkillRegistry",
    "TraceConfig",
    "TraceSink",
    "Usage",
    "call_cost",
    "load_registry",
    "load_model_routing",
    "read_jsonl",
    "model_routing_from_dict",
    "session_totals",
]
