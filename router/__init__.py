"""tiered-router: decide each query's intent with rules, a static token table, a transformer, then (rarely) an LLM.

The public API is what ``__all__`` lists, and nothing else: the modules behind it are private
(``_name.py``), as in httpx. ``router.dispatch``, ``router.service``, ``router.providers``, ``router.learn``
and ``router.testing`` are public namespaces with their own ``__all__``.

Nothing heavy is imported here: ONNX Runtime, FAISS and tokenizers load when a Router or Builder
is first built; the dispatcher, the HTTP client and the server settings load on first use of
their names.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from router import errors
from router._builder import Builder, BuildReport
from router._config import (
    CalibrationConfig,
    EncoderConfig,
    FinetuneConfig,
    LimitsConfig,
    RouterConfig,
    RulesConfig,
    StaticConfig,
    VectorIndexConfig,
    load_config,
)
from router._decision import Candidate, Decision
from router._intents import Intent, IntentSet, intent_set_from_yaml, load_intent_source
from router._router import Router
from router._telemetry import instrument, uninstrument
from router.errors import *  # noqa: F403 - the whole error tree, as errors.__all__ lists it
from router.learn import LearningConfig
from router.llm import LLMBackendConfig, LLMConfig

if TYPE_CHECKING:
    from router._client import AsyncRouterClient, RouterClient
    from router.dispatch import (
        Dispatcher,
        ModelRoutingConfig,
        Skill,
        SkillContext,
        SkillRegistry,
        load_model_routing,
    )
    from router.service import ServeConfig
    from router.state import StateConfig

try:
    __version__ = version("tiered-router")
except PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

# Loaded on first use: the dispatcher brings tenacity and httpx, the client httpx.
_LAZY = {
    "Dispatcher": "router.dispatch", "ModelRoutingConfig": "router.dispatch", "Skill": "router.dispatch",
    "SkillContext": "router.dispatch", "SkillRegistry": "router.dispatch", "load_model_routing": "router.dispatch",
    "RouterClient": "router._client", "AsyncRouterClient": "router._client", "ServeConfig": "router.service",
    "StateConfig": "router.state",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'router' has no attribute {name!r}")


__all__ = [
    # classify
    "Router", "Decision", "Candidate",
    # build, and the configs a user writes
    "Builder", "BuildReport", "RouterConfig", "EncoderConfig", "VectorIndexConfig", "CalibrationConfig",
    "LimitsConfig", "RulesConfig", "StaticConfig", "FinetuneConfig", "LLMConfig", "LLMBackendConfig",
    "load_config", "Intent", "IntentSet", "intent_set_from_yaml", "load_intent_source", "LearningConfig",
    # dispatch, serve, call the service
    "Dispatcher", "SkillRegistry", "Skill", "SkillContext", "ModelRoutingConfig", "load_model_routing",
    "ServeConfig", "RouterClient", "AsyncRouterClient", "StateConfig",
    # OpenTelemetry spans (the [otel] extra)
    "instrument", "uninstrument",
    "__version__",
]
__all__ += errors.__all__  # the error tree (router/errors.py), in full
