"""tiered-router: decide each query's intent with rules, a static token table, a transformer, then (rarely) an LLM.

Nothing heavy is imported here: ONNX Runtime, FAISS and tokenizers load when a
Router or Builder is first built.
"""

from importlib.metadata import PackageNotFoundError, version

from router.builder import Builder, BuildReport
from router.calibration import Calibration
from router.config import (
    CalibrationConfig,
    EncoderConfig,
    HeadConfig,
    LimitsConfig,
    RouterConfig,
    RulesConfig,
    StaticConfig,
    VectorIndexConfig,
    load_config,
)
from router.decision import Candidate, Decision
from router.encoders import ENCODERS, Encoder
from router.errors import (
    ConfigError,
    IndexLoadError,
    InputError,
    ModelError,
    RouterError,
    StaleIndexError,
)
from router.intents import Intent, IntentSet, intent_set_from_yaml, load_intent_source
from router.router import Router
from router.rules import RuleMatch, RuleSet
from router.vectors import VECTOR_INDEXES, VectorIndex

try:
    __version__ = version("tiered-router")
except PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

__all__ = [
    "ENCODERS",
    "VECTOR_INDEXES",
    "BuildReport",
    "Builder",
    "Calibration",
    "CalibrationConfig",
    "Candidate",
    "ConfigError",
    "Decision",
    "Encoder",
    "EncoderConfig",
    "HeadConfig",
    "IndexLoadError",
    "InputError",
    "Intent",
    "IntentSet",
    "LimitsConfig",
    "ModelError",
    "Router",
    "RouterConfig",
    "RouterError",
    "RuleMatch",
    "RuleSet",
    "RulesConfig",
    "StaleIndexError",
    "StaticConfig",
    "VectorIndex",
    "VectorIndexConfig",
    "__version__",
    "intent_set_from_yaml",
    "load_config",
    "load_intent_source",
]
