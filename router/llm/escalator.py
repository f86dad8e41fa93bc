"""The tier-2 pipeline: ask the chain of LLM backends about an escalated Decision, never fail.

For each escalated query the prompt offers tier 1's top candidates plus ``none``. Backends are
tried in order; one whose breaker is open is skipped without a call. Any failure (timeout,
connection error, HTTP error, an answer outside the labels, even an unexpected exception)
counts against that backend's breaker and moves on to the next. When none answers, the
Decision is tier 1's, marked ``degraded`` with the reasons.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from time import perf_counter_ns
from typing import TYPE_CHECKING

from router.breaker import CircuitBreaker
from router.decision import TIER_LLM, Decision, LLMCall
from router.errors import ConfigError, ProviderError
from router.intents import IntentSet
from router.llm import LLM_CLIENTS, LLMAnswer, LLMClient, LLMConfig
from router.llm.loop import LoopThread
from router.llm.prompt import NONE_LABEL, PromptBuilder

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("router.llm")


class Escalator:
    def __init__(self, config: LLMConfig, intents: IntentSet, clients: Sequence[LLMClient] | None = None) -> None:
        import httpx

        self.config = config
        self.prompts = PromptBuilder(intents, examples_per_candidate=config.examples_per_candidate,
                                     catalogue=config.catalogue, shuffle=config.shuffle)
        self._skills = {i.name: i.skill for i in intents.intents}
        self._loop = LoopThread()
        limit = sum(b.max_concurrency for b in config.backends)
        # One pool for every HTTP backend; per-call timeouts are set on each request.
        self.http: httpx.AsyncClient = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit))
        self.clients: list[LLMClient] = list(clients) if clients is not None else [
            LLM_CLIENTS[b.backend](b, self.http) for b in config.backends]
        if len(self.clients) != len(config.backends):
            raise ConfigError(f"llm: {len(self.clients)} clients given for {len(config.backends)} configured backends")
        self.timeouts = {c.name: b.timeout_s for c, b in zip(self.clients, config.backends, strict=True)}
        # Concurrency is bounded here, outside the timeout: waiting for a slot is not the backend's fault.
        self.slots = {c.name: asyncio.Semaphore(getattr(c, "concurrency", 1)) for c in self.clients}
        self.breakers = {c.name: CircuitBreaker(config.breaker) for c in self.clients}
        self.enabled = True
        self.status = "on"

    # -- public ------------------------------------------------------------------------------------
    def resolve(self, text: str, decision: Decision) -> Decision:
        return self._loop.run(self.settle(text, decision))

    async def aresolve(self, text: str, decision: Decision) -> Decision:
        return await self._loop.arun(self.settle(text, decision))

    def resolve_many(self, items: Sequence[tuple[str, Decision]]) -> list[Decision]:
        return self._loop.run(self._settle_all(items))

    async def aresolve_many(self, items: Sequence[tuple[str, Decision]]) -> list[Decision]:
        return await self._loop.arun(self._settle_all(items))

    async def _settle_all(self, items: Sequence[tuple[str, Decision]]) -> list[Decision]:
        return list(await asyncio.gather(*(self.settle(t, d) for t, d in items)))

    def warm(self) -> None:
        """Load each backend's model and fill its prompt cache with the static prefix.

        Runs one call per backend without the per-call timeout (a cold llama.cpp spends seconds
        on the intent catalogue once); a failure is logged, not raised.
        """
        names = self.prompts.names[:2]
        prompt = self.prompts.build("hello", names)

        async def warm_all() -> None:
            for client in self.clients:
                try:
                    await client.choose(prompt)
                except Exception as exc:  # warming is best effort; the breaker sees real calls
                    log.warning("warming tier 2 %s failed: %s", client.name, exc)

        self._loop.run(warm_all())

    def ping(self) -> dict[str, bool]:
        async def pings() -> dict[str, bool]:
            return {c.name: await c.ping() for c in self.clients}

        return self._loop.run(pings())

    def close(self) -> None:
        async def shut() -> None:
            for client in self.clients:
                await client.aclose()
            await self.http.aclose()

        try:
            self._loop.run(shut())
        finally:
            self._loop.stop()

    # -- the pipeline ------------------------------------------------------------------------------
    async def settle(self, text: str, decision: Decision) -> Decision:
        """Runs on the private loop. Never raises for a backend's failure."""
        start = perf_counter_ns()
        prompt = self.prompts.build(text, [c.intent for c in decision.candidates[: self.config.top_k]])
        failures: list[str] = []
        for client in self.clients:
            breaker = self.breakers[client.name]
            if not breaker.allow():
                failures.append(f"{client.name}: circuit_open")
                continue
            try:
                async with self.slots[client.name]:
                    called = perf_counter_ns()
                    async with asyncio.timeout(self.timeouts[client.name]):
                        answer = await client.choose(prompt)
            except TimeoutError:
                reason = "timeout"
            except ProviderError as exc:
                reason = exc.reason
                log.warning("tier 2 %s failed: %s", client.name, exc)
            except Exception as exc:  # a backend bug must not fail the request either
                reason = f"error:{type(exc).__name__}"
                log.exception("tier 2 %s raised", client.name)
            else:
                breaker.record_success()
                return self._answered(decision, answer, client, failures, start, called)
            breaker.record_failure()
            failures.append(f"{client.name}: {reason}")
        return self._degraded(decision, "; ".join(failures), start)

    def _answered(self, decision: Decision, answer: LLMAnswer, client: LLMClient, failures: list[str],
                  start: int, called: int) -> Decision:
        done = perf_counter_ns()
        none = answer.label == NONE_LABEL
        intent = None if none else answer.label
        confidence = answer.confidence
        if confidence is None:  # a generated label has no probability: report tier 1's for that intent
            confidence = next((c.score for c in decision.candidates if c.intent == intent), 0.0)
        latency = dict(decision.latency_us)
        latency["llm"] = round((done - called) / 1000.0, 1)
        latency["total"] = round(latency.get("total", 0.0) + (done - start) / 1000.0, 1)
        call = LLMCall(backend=client.name, model=answer.model, latency_ms=round((done - called) / 1e6, 3),
                       prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
                       cached_tokens=answer.cached_tokens, fallback_from=failures)
        return replace(decision, intent=intent, out_of_scope=none, confidence=round(confidence, 6), tier=TIER_LLM,
                       escalate=False, skill=self._skills.get(intent) if intent else None, llm=call,
                       latency_us=latency)

    def _degraded(self, decision: Decision, reason: str, start: int) -> Decision:
        latency = dict(decision.latency_us)
        latency["total"] = round(latency.get("total", 0.0) + (perf_counter_ns() - start) / 1000.0, 1)
        return replace(decision, degraded=True, degraded_reason=reason, latency_us=latency)
