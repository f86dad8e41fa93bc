"""The tier-2 pipeline: ask the chain of LLM backends about an escalated Decision, never fail.

For each escalated query the prompt offers tier 1's top candidates plus ``none``, as a structured
choice. The backends are tried in order through one ``router.providers.Chain`` (breakers,
concurrency slots, timeouts; no retries): one whose breaker is open is skipped without a call,
and any failure (timeout, connection error, HTTP error, an answer outside the labels, even an
unexpected exception) counts against that backend's breaker and moves on to the next. When none
answers, the Decision is tier 1's, marked ``degraded`` with the reasons.

Async only: calls run on the caller's event loop, over one shared httpx client per loop (the
escalator's ``HttpClients``). Synchronous callers go through the Router's ``SyncBridge``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from time import perf_counter_ns

from router._decision import TIER_LLM, Decision, LLMCall
from router._intents import IntentSet
from router.errors import ConfigError, FallbacksExhausted
from router.llm._config import LLMConfig
from router.llm._prompt import NONE_LABEL, Prompt, PromptBuilder, content_free
from router.providers import (
    Chain,
    ChainResult,
    ChatRequest,
    CircuitBreaker,
    HttpClients,
    Message,
    Provider,
    RetryConfig,
    Target,
    build_provider,
)

log = logging.getLogger("router.llm")


def choice_request(prompt: Prompt, max_tokens: int, calibrated: bool = True) -> ChatRequest:
    """The prompt as a structured choice among its labels. With ``calibrated``, its ``calibration`` is
    the same request with the message content-free (``content_free``), which llama.cpp's label scoring
    subtracts; the chain sets each backend's own ``max_tokens``."""
    if not calibrated:
        return ChatRequest(system=prompt.system, messages=(Message("user", prompt.user),), choices=prompt.labels,
                           max_tokens=max_tokens, temperature=0.0, query=prompt.query)
    null = content_free(prompt)
    calibration = ChatRequest(system=prompt.system, messages=(Message("user", null.user),), choices=prompt.labels,
                              max_tokens=max_tokens, temperature=0.0, query=null.query)
    # Built directly, not by dataclasses.replace (several times slower): this runs for every escalated query.
    return ChatRequest(system=prompt.system, messages=(Message("user", prompt.user),), choices=prompt.labels,
                       max_tokens=max_tokens, temperature=0.0, query=prompt.query, calibration=calibration)


class Escalator:
    """``providers`` (backend label → Provider) replaces the ones the config would build (tests, custom
    backends); each must name a configured backend."""

    def __init__(self, config: LLMConfig, intents: IntentSet, providers: Mapping[str, Provider] | None = None) -> None:
        self.config = config
        self.prompts = PromptBuilder(intents, examples_per_candidate=config.examples_per_candidate,
                                     catalogue=config.catalogue, shuffle=config.shuffle)
        labels = [b.label for b in config.backends]
        unknown = sorted(set(providers or {}) - set(labels))
        if unknown:
            raise ConfigError(f"llm providers: {unknown} name no configured backend; known: {', '.join(labels)}")
        limit = sum(b.max_concurrency for b in config.backends)
        self.http = HttpClients(max_connections=limit, max_keepalive=limit)
        self.providers: dict[str, Provider] = {}
        for i, backend in enumerate(config.backends):
            given = (providers or {}).get(backend.label)
            self.providers[backend.label] = given if given is not None else build_provider(
                backend.label, backend.provider(), self.http, field=f"llm.backends[{i}].backend")
        self.targets: list[Target] = [b.target() for b in config.backends]
        for target in self.targets:
            check = getattr(self.providers[target.provider], "check_model", None)
            if check is not None:  # an in-process model: fail at start-up on a missing file
                check(target.model)
        self._labels = {t.key: t.provider for t in self.targets}
        # Only llama.cpp's calibrated label scoring reads the content-free twin: built for it alone.
        self._calibrated = any(b.backend == "llama_cpp" and b.method == "logprob" and b.calibrate
                               for b in config.backends)
        self.chain = Chain(self.providers, breaker=config.breaker, retry=RetryConfig(max_retries=0))
        self.enabled = True
        self.status = "on"

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """Per backend label."""
        return {t.provider: self.chain.breaker(t) for t in self.targets}

    # -- public ------------------------------------------------------------------------------------
    async def settle_many(self, items: Sequence[tuple[str, Decision]]) -> list[Decision]:
        return list(await asyncio.gather(*(self.settle(t, d) for t, d in items)))

    async def aopen(self) -> None:
        """Open the running loop's pooled connections now rather than on the first call."""
        await self.http.aopen()

    async def warm(self) -> None:
        """Load each backend's model and fill its prompt cache with the static prefix.

        Runs one call per backend without the per-call timeout (a cold llama.cpp spends seconds
        on the intent catalogue once); a failure is logged, not raised.
        """
        request = self._request(self.prompts.build("hello", self.prompts.names[:2]))
        for target in self.targets:
            try:
                await self.providers[target.provider].complete(target.model, request, 600.0)
            except Exception as exc:  # warming is best effort; the breaker sees real calls
                log.warning("warming tier 2 %s failed: %s", target.provider, exc)

    async def ping(self) -> dict[str, bool]:
        return {t.provider: await self.providers[t.provider].ping() for t in self.targets}

    async def aclose(self) -> None:
        """Close the providers and this loop's connections (call it on the loop that made the calls)."""
        for provider in self.providers.values():
            await provider.aclose()
        await self.http.aclose()

    # -- the pipeline ------------------------------------------------------------------------------
    def _request(self, prompt: Prompt) -> ChatRequest:
        return choice_request(prompt, self.config.backends[0].max_tokens, self._calibrated)

    async def settle(self, text: str, decision: Decision) -> Decision:
        """Never raises for a backend's failure."""
        start = perf_counter_ns()
        prompt = self.prompts.build(text, [c.intent for c in decision.candidates[: self.config.top_k]])
        try:
            result = await self.chain.call(self.targets, self._request(prompt), name="tier 2")
        except FallbacksExhausted as exc:
            reasons = [f"{self._labels.get(m, m)}: {e.reason}" for m, e in zip(exc.models, exc.errors, strict=True)]
            return self._degraded(decision, "; ".join(reasons), start)
        return self._answered(decision, result, start)

    def _answered(self, decision: Decision, result: ChainResult, start: int) -> Decision:
        done = perf_counter_ns()
        answer = result.completion
        call_ms = result.attempts[-1].latency_ms
        none = answer.text == NONE_LABEL
        intent = None if none else answer.text
        confidence = answer.confidence
        if confidence is None:  # a generated label has no probability: report tier 1's for that intent
            confidence = next((c.score for c in decision.candidates if c.intent == intent), 0.0)
        latency = dict(decision.latency_us)
        latency["llm"] = round(call_ms * 1000.0, 1)
        latency["total"] = round(latency.get("total", 0.0) + (done - start) / 1000.0, 1)
        usage = answer.usage
        estimated = usage.estimated  # no usage block: no counts to report
        call = LLMCall(backend=result.target.provider, model=answer.model, latency_ms=round(call_ms, 3),
                       prompt_tokens=0 if estimated else usage.input_tokens + usage.cached_input_tokens,
                       completion_tokens=0 if estimated else usage.output_tokens,
                       cached_tokens=0 if estimated else usage.cached_input_tokens,
                       fallback_from=[f"{t.provider}: {e.reason}" for t, e in result.errors])
        return replace(decision, intent=intent, out_of_scope=none, confidence=round(confidence, 6), tier=TIER_LLM,
                       escalate=False, skill=None, llm=call,  # the Router's map names the skill (tiers/_llm.py)
                       latency_us=latency)

    def _degraded(self, decision: Decision, reason: str, start: int) -> Decision:
        latency = dict(decision.latency_us)
        latency["total"] = round(latency.get("total", 0.0) + (perf_counter_ns() - start) / 1000.0, 1)
        return replace(decision, degraded=True, degraded_reason=reason, latency_us=latency)
