"""Modelled cost per 1,000 queries, from measured time and tokens.

Two prices for the LLM tier, both from the same measurements:
- ``remote``: each LLM call billed as if sent to a cheap remote model from the dispatcher's
  price table (default gpt-5.4-nano): the real prompt's tokens as input, the part our
  backend found in its prefix cache at the cached-input price, and ``answer_tokens`` of output.
  Label scoring with a content-free pass evaluates two prompts; a remote model reads one.
- ``self_hosted``: the LLM's wall time times its threads, at ``vcpu_hour_usd``.
Everything that is not an LLM call (rules, encoder, head, index, semantic-router's scoring)
runs on one thread, one query at a time, so it is priced as its wall time on one vCPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from router.bench._metrics import Record
from router.dispatch._config import Price, load_model_routing
from router.llm._config import LLMBackendConfig


@dataclass(frozen=True)
class CostModel:
    vcpu_hour_usd: float
    price_model: str
    price: Price
    llm_threads: int
    prompt_passes: int
    answer_tokens: int = 8

    @classmethod
    def from_table(cls, price_model: str, vcpu_hour_usd: float, backend: LLMBackendConfig) -> CostModel:
        from router.errors import ConfigError

        prices = load_model_routing().prices
        if price_model not in prices:
            raise ConfigError(f"--price-model={price_model!r} is not in the price table; known: {sorted(prices)}")
        passes = 2 if backend.backend == "llama_cpp" and backend.method == "logprob" and backend.calibrate else 1
        return cls(vcpu_hour_usd, price_model, prices[price_model], backend.threads, passes)

    def _vcpu(self, seconds: float) -> float:
        return seconds * self.vcpu_hour_usd / 3600.0

    def _remote(self, r: Record) -> float:
        call = r.outcome.llm
        if call is None or not call.prompt_tokens:
            return 0.0
        prompt = call.prompt_tokens // self.prompt_passes
        cached = min(call.cached_tokens // self.prompt_passes, prompt)
        p = self.price
        dollars = ((prompt - cached) * p.input + cached * p.cached + self.answer_tokens * p.output) / Decimal(10**6)
        return float(dollars)

    def per_1k(self, records: list[Record]) -> dict[str, float]:
        local = sum(self._vcpu(max(r.latency_us / 1e6 - r.llm_ms / 1e3, 0.0)) for r in records)
        self_hosted = sum(self._vcpu(r.llm_ms / 1e3 * self.llm_threads) for r in records)
        remote = sum(self._remote(r) for r in records)
        scale = 1000.0 / len(records)
        return {"usd_per_1k_remote_llm": (local + remote) * scale,
                "usd_per_1k_self_hosted": (local + self_hosted) * scale}

    def describe(self) -> str:
        p = self.price
        return (f"local work at ${self.vcpu_hour_usd}/vCPU-hour on one vCPU; LLM calls either at "
                f"{self.price_model} list prices (${p.input}/M input, ${p.cached}/M cached input, ${p.output}/M "
                f"output; the real prompt's tokens, {self.answer_tokens} output tokens) or self-hosted "
                f"(LLM wall time x {self.llm_threads} threads at the vCPU price)")
