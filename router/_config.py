"""Router configuration: pydantic models (unknown keys rejected), loaded from YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from router._strict import Strict, format_validation_error
from router._yaml_file import read_mapping
from router.errors import ConfigError
from router.learn._config import LearningConfig
from router.llm._config import LLMConfig


class EncoderConfig(Strict):
    backend: str = "onnx"
    model: str = "minilm-l6-int8"
    threads: int = Field(1, ge=1, le=256)
    # Threads for encoding the examples at build time; None: one per core (a build is offline work).
    build_threads: int | None = Field(None, ge=1, le=256)
    batch_size: int = Field(64, ge=1, le=4096)
    cache_size: int = Field(4096, ge=0, le=10_000_000)
    # A folder of extra model manifests; its cache/ then holds exported and distilled files
    # (router/_paths.py). None: $ROUTER_MODELS_DIR, ./models, then the shipped manifests.
    models_dir: str | None = None


class VectorIndexConfig(Strict):
    kind: str = "auto"
    # Below this many examples an exact scan is as fast as a graph; from here on HNSW.
    auto_hnsw_from: int = Field(4096, ge=1)
    hnsw_m: int = Field(32, ge=4, le=256)
    ef_construction: int = Field(80, ge=8)
    ef_search: int = Field(32, ge=1)
    neighbours: int = Field(10, ge=1, le=1000)


class HeadConfig(Strict):
    l2: float = Field(1e-5, ge=0)
    epochs: int = Field(300, ge=1, le=100_000)
    learning_rate: float = Field(0.1, gt=0)


class CalibrationConfig(Strict):
    """Tier 1b's acceptance thresholds, fitted on held-out evidence (router/_calibration.py)."""

    target_precision: float = Field(0.97, gt=0.5, lt=1.0, description="precision the accepted answers must reach")
    oos_prior: float = Field(0.2, ge=0.0, lt=1.0, description="expected out-of-scope share: held-out "
                             "out-of-scope rows are weighted up to it")
    z: float = Field(1.0, ge=0.0, le=5.0, description="z of the Wilson lower bound the precision must clear")
    folds: int = Field(5, ge=2, le=50, description="cross-fitting folds when there is no validation split")
    oos_floor_quantile: float = Field(0.01, ge=0.0, lt=0.5, description="out-of-scope similarity floor, as a "
                                      "quantile of held-out in-scope queries' similarity")
    fallback_threshold: float = Field(0.5, ge=0.0, le=1.0, description="used only when there is too little data "
                                      "to fit (fewer than 2 examples of some intent)")


class StaticConfig(Strict):
    """Tier 1a: the static token table distilled from the encoder, with its own head and calibration."""

    enabled: bool = True
    dim: int | None = Field(None, gt=0, description="PCA width of the table; None keeps the encoder's dimension "
                            "(checked against it at build time)")
    target_precision: float = Field(0.99, gt=0.0, le=1.0, description="stricter than tier 1b's: what the static "
                                    "tier accepts never gets a second look")
    weighting: Literal["auto", "uniform", "sif", "idf"] = Field(
        "auto", description="token weighting; auto tries each and keeps the best held-out coverage at the target")
    epochs: int = Field(100, ge=1, le=100_000, description="epochs of the static head")
    # Without a validation split the tuning runs inside each cross-fitting fold, so the fitted
    # thresholds see its effect on held-out examples.
    tune_epochs: int = Field(5, ge=0, le=1000, description="supervised tuning of the table's rows on the intents, "
                             "before the head is trained (0: off)")
    tune_lr: float = Field(0.01, gt=0.0, le=1.0, description="learning rate of that tuning")
    oos_floor_quantile: float = Field(0.01, ge=0.0, lt=0.5, description="the static out-of-scope check: "
                                      "similarity to the best intent's nearest example, at least this low "
                                      "quantile of held-out in-scope queries'")


class RulesConfig(Strict):
    mine: bool = False
    min_precision: float = Field(0.995, gt=0.5, le=1.0)
    min_train_support: int = Field(15, ge=1)
    min_val_support: int = Field(5, ge=1)
    max_per_intent: int = Field(3, ge=1)
    guards: bool = True
    # The tier-0 scan of one text stops after this long; the text then gets no rule decision and the
    # flag ``rules_timeout`` (router/_rules.py). The default guards need under 1 ms for 2,000
    # characters: raise it with limits.max_text_chars or for very many patterns.
    match_timeout_ms: float = Field(20.0, gt=0, le=60_000)


class FinetuneConfig(Strict):
    """``router build --finetune``: tune the encoder itself on the intents (the ``[train]`` extra).

    The tuned encoder is served as ONNX from the index folder, without torch (router/train/).
    """

    # Base weights: a manifest with safetensors weights (``export_config``). None: the configured
    # encoder's model when it has them, else minilm-l6-fp32 (the int8 default has no trainable weights).
    base: str | None = None
    epochs: int = Field(3, gt=0, le=1000)
    lr: float = Field(5e-5, gt=0, le=1.0)
    head_lr: float = Field(2e-2, gt=0, le=10.0)
    batch_size: int = Field(32, gt=0, le=4096)
    max_length: int = Field(48, ge=8, le=512)
    seed: int = Field(0, ge=0)
    # ``cosine``: a normalised-softmax head (scale ``scale``) over the intents; ``linear``: plain softmax.
    loss: Literal["cosine", "linear"] = "cosine"
    scale: float = Field(20.0, gt=0, le=100.0)
    # The out-of-scope training examples: an extra class of the tuned head (served as a reject column),
    # pushed towards a flat distribution over the intents (``negatives``), or left out of training
    # (``ignore``, the default: then they stay held out, and the thresholds see twice as many
    # out-of-scope queries on CLINC150; it measured best of the three, docs/finetune.md).
    oos: Literal["class", "negatives", "ignore"] = "ignore"
    # Stop after this many epochs without a better validation accuracy (0: run every epoch); the
    # best epoch's weights are kept either way.
    early_stopping: int = Field(1, ge=0, le=1000)
    # Without a validation split, this stratified share of each intent's examples is held out (never
    # trained on, never in the index) for early stopping and the thresholds.
    holdout: float = Field(0.1, gt=0.0, lt=0.5)
    # Keep the word-embedding table as the base has it: a quarter less time per step (its Adam
    # update touches 11.7M weights); every measured run kept it (docs/finetune.md).
    freeze_embeddings: bool = True
    # Also keep the lowest this many transformer layers as the base has them: their backward pass is
    # skipped, about a ninth of a step's time each on MiniLM-L6.
    freeze_layers: int = Field(0, ge=0, le=48)
    # Training threads; None: one per core.
    threads: int | None = Field(None, ge=1, le=256)


class LimitsConfig(Strict):
    max_text_chars: int = Field(2000, ge=1, le=1_000_000)
    max_batch: int = Field(256, ge=1, le=100_000)


class RouterConfig(Strict):
    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]+$")
    # Exactly one source: an intent YAML / labelled JSONL or CSV file, or a shipped dataset name.
    intents: str | None = None
    dataset: str | None = None
    validation: str | None = None
    top_k: int = Field(5, ge=1, le=100)
    encoder: EncoderConfig = EncoderConfig()
    vector_index: VectorIndexConfig = VectorIndexConfig()
    head: HeadConfig = HeadConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    static: StaticConfig = StaticConfig()
    rules: RulesConfig = RulesConfig()
    limits: LimitsConfig = LimitsConfig()
    # Tier 2; None keeps escalated queries escalated (the caller decides).
    llm: LLMConfig | None = None
    # Fine-tune the encoder on the intents at build time; None serves the encoder as shipped.
    finetune: FinetuneConfig | None = None
    # Learning from feedback and escalations (router/learn/); explicit feedback is on, tier 2's answers off.
    learning: LearningConfig = LearningConfig()

    @model_validator(mode="after")
    def _one_source(self) -> RouterConfig:
        if (self.intents is None) == (self.dataset is None):
            raise ValueError("set exactly one of 'intents' (a file) or 'dataset' (a shipped dataset name)")
        if self.validation is not None and self.dataset is not None:
            raise ValueError("'validation' goes with 'intents'; a shipped dataset brings its own split")
        return self


def load_config(path: str | Path) -> RouterConfig:
    """Read a YAML router config; relative file paths in it are taken relative to the file."""
    path = Path(path)
    data = read_mapping(path, "config file")
    for key in ("intents", "validation"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str((path.parent / data[key]).resolve())
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from exc
