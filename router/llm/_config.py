"""Tier-2 configuration: the ordered chain of LLM backends, the prompt, the breaker, the gate.

Each backend is a model provider of ``router.providers`` (its ``backend`` is a ``PROVIDERS`` kind);
``LLMBackendConfig.provider()`` and ``.target()`` convert it, in this one place, to what the chain
calls: a ``ProviderConfig`` and a ``Target``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from router._strict import Strict
from router.providers import PROVIDERS, BreakerConfig, ProviderConfig, Target
from router.providers._config import ModelSettings

# Fields each backend cannot do without; checked when the config is loaded, not at first call.
# A premium API (openai, anthropic, gemini) needs a model, and has a default url.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "vllm": ("url", "model"),
    "openai_compatible": ("url", "model"),
    "memory": (),
}
# The in-process model has one context: one call at a time, whatever max_concurrency says.
_ONE_AT_A_TIME = {"llama_cpp"}


class LLMBackendConfig(ModelSettings):
    backend: str = Field(description="a router.providers.PROVIDERS kind: vllm, openai_compatible, llama_cpp, "
                                     "memory (or openai, anthropic, gemini)")
    name: str | None = Field(None, description="label in Decisions and metrics (default: the backend key)")
    url: str | None = Field(None, description="base URL of an OpenAI-protocol server, e.g. http://127.0.0.1:8001/v1")
    model: str | None = Field(None, description="served model name; for llama_cpp a models/ manifest or a .gguf path")
    api_key_env: str | None = Field(None, description="environment variable holding the bearer token")
    # vLLM >= 0.12 takes structured_outputs; older servers take guided_choice.
    structured: Literal["structured_outputs", "guided_choice"] = "structured_outputs"
    timeout_s: float = Field(2.0, gt=0, le=600)
    max_concurrency: int = Field(8, ge=1, le=1024)
    max_tokens: int = Field(24, ge=1, le=512)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        PROVIDERS.get(value, "llm.backends[].backend")  # ConfigError naming the known ones
        return value

    @model_validator(mode="after")
    def _required_fields(self) -> LLMBackendConfig:
        missing = [f for f in _REQUIRED.get(self.backend, ("model",)) if getattr(self, f) is None]
        if missing:
            raise ValueError(f"backend {self.backend!r} needs {', '.join(missing)}")
        return self

    @property
    def label(self) -> str:
        return self.name or self.backend

    def provider(self) -> ProviderConfig:
        """The provider this backend calls, named ``label`` in the chain."""
        # The shared settings pass as they are; ``structured`` is the one key whose tier-2 meaning
        # (how vLLM is sent a choice) is vLLM's alone, so it goes to vLLM only.
        return ProviderConfig(kind=self.backend, base_url=self.url, api_key_env=self.api_key_env,
                              structured=self.structured if self.backend == "vllm" else None,
                              **self.model_dump(include=set(ModelSettings.model_fields)))

    def target(self) -> Target:
        """The model the chain asks, with this backend's timeout, output cap and concurrency."""
        concurrency = 1 if self.backend in _ONE_AT_A_TIME else self.max_concurrency
        return Target(self.label, self.model or self.backend, self.timeout_s, self.max_tokens, concurrency)


class LLMConfig(Strict):
    # Tried in order: the first that answers wins; one that fails or whose breaker is open is skipped.
    backends: list[LLMBackendConfig] = Field(min_length=1, max_length=16)
    top_k: int = Field(5, ge=1, le=50, description="candidates offered to the LLM, plus 'none'")
    examples_per_candidate: int = Field(1, ge=0, le=10)
    catalogue: bool = Field(True, description="list every intent in the static (cached) prompt prefix")
    shuffle: bool = Field(True, description="shuffle candidates per query: small models favour a position")
    breaker: BreakerConfig = BreakerConfig()
    # auto: use the build-time measurement (off when the LLM does not beat tier 1 on the
    # validation slice); on / off: force.
    gate: Literal["auto", "on", "off"] = "auto"
    gate_sample: int = Field(300, ge=1, le=100_000, description="escalated validation queries measured at build")

    @model_validator(mode="after")
    def _unique_labels(self) -> LLMConfig:
        labels = [b.label for b in self.backends]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"backend names must be unique in the chain; repeated: {dupes} (set 'name')")
        return self


class LLMGate(Strict):
    """Build-time measurement on the escalated validation slice: does tier 2 beat tier 1 there?"""

    backend: str
    model: str
    n_escalated: int
    llm_slice_accuracy: float | None
    tier1_slice_accuracy: float | None
    degraded: int
    enabled: bool
    reason: str
