"""The public surface: ``router.__all__`` and ``router.dispatch.__all__`` are pinned here.

A name added to or dropped from either is an API change: it must show up in this diff. Every
exception of the error tree is importable from ``router``, and ``import router`` loads nothing
heavy (the ONNX runtime, FAISS, tokenizers, FastAPI and httpx come with first use).
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import router
import router.dispatch
import router.errors

ROUTER_ALL = [
    "AsyncRouterClient", "BuildReport", "Builder", "CalibrationConfig", "Candidate", "Decision",
    "Dispatcher", "EncoderConfig", "FinetuneConfig", "Intent", "IntentSet", "LLMBackendConfig", "LLMConfig",
    "LearningConfig",
    "LimitsConfig", "ModelRoutingConfig", "Router", "RouterClient", "RouterConfig", "RulesConfig", "ServeConfig",
    "Skill", "SkillContext", "SkillRegistry", "StateConfig", "StaticConfig", "VectorIndexConfig", "__version__",
    "instrument", "intent_set_from_yaml", "load_config", "load_intent_source", "load_model_routing", "uninstrument",
]

DISPATCH_ALL = [
    "BudgetConfig", "CallResult", "CallSummary", "DispatchResult", "Dispatcher", "ModelRoutingConfig", "PendingAction",
    "Price",
    "ProviderConfig", "RetryConfig", "SessionTotals", "Skill", "SkillContext", "SkillRegistry", "StateConfig",
    "StreamCall", "TraceConfig",
    "load_model_routing", "load_registry", "model_routing_from_dict", "read_jsonl", "session_totals",
]


def _error_tree() -> list[str]:
    return sorted(name for name, obj in vars(router.errors).items()
                  if inspect.isclass(obj) and issubclass(obj, router.errors.RouterError))


def test_router_all_is_pinned_and_holds_the_whole_error_tree() -> None:
    assert sorted(router.__all__) == sorted(ROUTER_ALL + _error_tree())
    assert len(_error_tree()) >= 29  # RouterError and every subclass drawn in errors.py's docstring


def test_every_public_name_resolves() -> None:
    for name in router.__all__:
        assert getattr(router, name) is not None, name
    for name in router.dispatch.__all__:
        assert getattr(router.dispatch, name) is not None, name
    assert router.Dispatcher is router.dispatch.Dispatcher
    assert router.IndexLoadError is router.errors.IndexLoadError


LEARN_ALL = ["ApplyReport", "LEARN_LOGS", "LearnLog", "LearnResult", "Learner", "LearningConfig", "LogEntry",
             "ReviewItem", "build_log", "digest", "normalise"]


def test_learn_all_is_pinned_and_resolves() -> None:
    import router.learn

    assert sorted(router.learn.__all__) == sorted(LEARN_ALL)
    for name in router.learn.__all__:
        assert getattr(router.learn, name) is not None, name
    assert router.LearningConfig is router.learn.LearningConfig


def test_dispatch_all_is_pinned() -> None:
    assert sorted(router.dispatch.__all__) == sorted(DISPATCH_ALL)


def test_internals_are_not_exported() -> None:
    for name in ("RuleMatch", "RuleSet", "Calibration", "HeadConfig", "ENCODERS", "VECTOR_INDEXES",
                 "IndexError_"):
        assert name not in router.__all__
        assert not hasattr(router, name), name


def test_import_router_loads_nothing_heavy() -> None:
    code = ("import sys, router; heavy = {'onnxruntime', 'faiss', 'tokenizers', 'fastapi', 'uvicorn', 'httpx', "
            "'torch', 'llama_cpp'}; print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


MCP_ALL = ["McpOptions", "RouterTools", "ToolAnswer", "ToolSpec", "build_server", "open_tools", "run", "serve_stdio"]
LANGCHAIN_ALL = ["DecisionRunnable", "IntentRouter", "RouterInput", "decision_from", "route_by_intent"]


def test_mcp_and_langchain_all_are_pinned_and_resolve() -> None:
    import router.langchain
    import router.mcp

    for module, pinned in ((router.mcp, MCP_ALL), (router.langchain, LANGCHAIN_ALL)):
        assert sorted(module.__all__) == sorted(pinned), module.__name__
        for name in module.__all__:
            assert getattr(module, name) is not None, name
