"""(d) An LLM every turn: the tier-2 model asked about every query, offered every intent.

The same backend, model and answer method as tier 2 (for llama.cpp: each label's log-likelihood
minus its score under a content-free message). The prompt is laid out for prefix caching: the
instructions and the whole intent list are the static system message, the query comes last.
"""

from __future__ import annotations

import asyncio
import time
from time import perf_counter_ns
from typing import Any

from router.bench.methods.base import MethodContext, Outcome
from router.decision import LLMCall
from router.errors import ProviderError
from router.intents import intent_set_from_labelled
from router.llm import LLM_CLIENTS
from router.llm.loop import LoopThread
from router.llm.prompt import NONE_LABEL, Prompt

INSTRUCTIONS = (
    "You route the messages a user sends to an assistant. Each message belongs to at most one of the "
    "intents listed below. Answer with exactly one intent label, copied as written, or "
    f"{NONE_LABEL} when the message fits none of them."
)


class EveryTurnLLM:
    def __init__(self, ctx: MethodContext, sample: int | None) -> None:
        self.ctx = ctx
        self.sample = sample
        self.backend = ctx.llm.backends[0]
        self.name = "LLM every turn"
        model = f"{self.backend.backend} {self.backend.model or ''}".strip()
        self.notes: list[str] = [f"{model}, every intent offered"]
        self._loop = LoopThread("bench-every-turn")
        self._client: Any = None
        self._http: Any = None

    def build(self) -> float:
        import httpx

        intents = intent_set_from_labelled(self.ctx.data.train)
        lines = [INSTRUCTIONS, "", "Intents:"]
        lines += [f"- {i.name}: {i.description}" for i in intents.intents]
        self.system = "\n".join(lines)
        self.labels = (*intents.names, NONE_LABEL)
        started = time.perf_counter()
        self._http = httpx.AsyncClient()
        self._client = LLM_CLIENTS[self.backend.backend](self.backend, self._http)
        self._loop.run(self._client.choose(self._prompt("hello")))  # load the model, cache the prefix
        seconds = time.perf_counter() - started
        self.notes.append(f"build: load the model and process the {len(self.labels) - 1}-intent prompt prefix")
        return seconds

    def _prompt(self, text: str) -> Prompt:
        return Prompt(self.system, f"Message: {text}\n\nAnswer with one intent label, or {NONE_LABEL}.",
                      self.labels, text)

    async def _ask(self, prompt: Prompt) -> Any:
        async with asyncio.timeout(self.backend.timeout_s):
            return await self._client.choose(prompt)

    def classify(self, text: str) -> Outcome:
        start = perf_counter_ns()
        try:
            answer = self._loop.run(self._ask(self._prompt(text)))
        except (TimeoutError, ProviderError) as exc:
            reason = exc.reason if isinstance(exc, ProviderError) else "timeout"
            call = LLMCall(self._client.name, self.backend.model or "", (perf_counter_ns() - start) / 1e6,
                           fallback_from=[reason])
            return Outcome(None, False, 0.0, "degraded", call)
        call = LLMCall(self._client.name, answer.model, (perf_counter_ns() - start) / 1e6, answer.prompt_tokens,
                       answer.completion_tokens, answer.cached_tokens)
        none = answer.label == NONE_LABEL
        confidence = answer.confidence if answer.confidence is not None else 1.0
        return Outcome(None if none else answer.label, not none, confidence, "llm", call)

    def close(self) -> None:
        async def shut() -> None:
            if self._client is not None:
                await self._client.aclose()
            if self._http is not None:
                await self._http.aclose()

        try:
            self._loop.run(shut())
        finally:
            self._loop.stop()


def every_turn(ctx: MethodContext, sample: int | None) -> EveryTurnLLM:
    return EveryTurnLLM(ctx, sample)
