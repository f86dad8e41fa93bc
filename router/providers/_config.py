"""How a model provider is configured (one entry of a model-routing file's ``providers``, or one
tier-2 backend converted by ``LLMBackendConfig.provider``), and the chain's retry policy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from router._strict import Strict

# Fields each kind cannot do without; checked when the config is loaded, not at first call.
_REQUIRED: dict[str, tuple[str, ...]] = {"vllm": ("base_url",)}
# ``structured`` means two things: how vLLM is sent a choice, and how an OpenAI-compatible server
# is asked for a JSON-schema answer. Each kind takes only its own values.
_STRUCTURED: dict[str, tuple[str, ...]] = {
    "vllm": ("structured_outputs", "guided_choice"),
    "openai_compatible": ("json_schema", "json_object"),
}


class ModelSettings(Strict):
    """The settings of a provider that a tier-2 backend sets too (``LLMBackendConfig`` takes them under
    the same keys): defined once here."""

    # How an OpenAI-compatible server is told to answer with one of the choices: json_schema (OpenAI,
    # llama.cpp's server), json_object + schema (llama-cpp-python's server), or a GBNF grammar.
    constraint: Literal["json_schema", "json_object", "grammar"] = "json_schema"
    # In-process llama.cpp: score each label by log-likelihood, or decode under a grammar.
    method: Literal["logprob", "choice"] = "logprob"
    # logprob only: subtract each label's score under a content-free message (twice the work).
    calibrate: bool = True
    threads: int = Field(2, ge=1, le=256)
    n_ctx: int = Field(4096, ge=512, le=131072)
    # memory only: scripted answers by query text (default: the first offered label).
    answers: dict[str, str] = Field(default_factory=dict)


class ProviderConfig(ModelSettings):
    kind: str = Field(description="a key of router.providers.PROVIDERS: openai, anthropic, gemini, "
                                  "openai_compatible, vllm, llama_cpp, memory")
    base_url: str | None = Field(None, description="default: the provider's public endpoint")
    api_key_env: str | None = Field(None, description="environment variable holding the key; never the key itself")
    structured: Literal["structured_outputs", "guided_choice", "json_schema", "json_object"] | None = Field(
        None, description="vllm: structured_outputs (>= 0.12, default) or guided_choice (older); openai_compatible: "
                          "json_schema (default) or json_object (llama-cpp-python's server) for JSON-schema answers")

    @model_validator(mode="after")
    def _per_kind(self) -> ProviderConfig:
        missing = [f for f in _REQUIRED.get(self.kind, ()) if getattr(self, f) is None]
        if missing:
            raise ValueError(f"kind {self.kind!r} needs {', '.join(missing)}")
        allowed = _STRUCTURED.get(self.kind)
        if self.structured is not None and allowed is not None and self.structured not in allowed:
            raise ValueError(f"structured={self.structured!r} does not apply to kind {self.kind!r}; "
                             f"use one of {list(allowed)}")
        return self


class RetryConfig(Strict):
    max_retries: int = Field(3, ge=0, le=3, description="retries after the first attempt, retryable errors only")
    initial_backoff_s: float = Field(0.5, gt=0, le=60)
    max_backoff_s: float = Field(8.0, gt=0, le=300)
    max_retry_after_s: float = Field(
        30.0, ge=0, le=3600, description="a longer Retry-After skips to the next model instead of waiting"
    )
