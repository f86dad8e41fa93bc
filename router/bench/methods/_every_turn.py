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

from router._decision import LLMCall
from router._intents import intent_set_from_labelled
from router._sync import SyncBridge
from router.bench.methods._base import MethodContext, Outcome
from router.errors import ProviderError
from router.llm._escalator import choice_request
from router.llm._prompt import NONE_LABEL, Prompt
from router.providers import ChatRequest, Completion, HttpClients, build_provider

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
        self._client: Any = None
        self._http = HttpClients()
        self._bridge = SyncBridge()
        self._target = self.backend.target()

    def build(self) -> float:
        intents = intent_set_from_labelled(self.ctx.data.train)
        lines = [INSTRUCTIONS, "", "Intents:"]
        lines += [f"- {i.name}: {i.description}" for i in intents.intents]
        self.system = "\n".join(lines)
        self.labels = (*intents.names, NONE_LABEL)
        started = time.perf_counter()
        self._client = build_provider(self.backend.label, self.backend.provider(), self._http)
        # Load the model and cache the prefix, without the per-call timeout.
        self._bridge.call(self._client.complete, self._target.model, self._request(self._prompt("hello")), 600.0)
        seconds = time.perf_counter() - started
        self.notes.append(f"build: load the model and process the {len(self.labels) - 1}-intent prompt prefix")
        return seconds

    def _prompt(self, text: str) -> Prompt:
        return Prompt(self.system, f"Message: {text}\n\nAnswer with one intent label, or {NONE_LABEL}.",
                      self.labels, text)

    def _request(self, prompt: Prompt) -> ChatRequest:
        """The same structured choice as tier 2's."""
        return choice_request(prompt, self._target.max_tokens)

    async def _ask(self, prompt: Prompt) -> Completion:
        timeout_s = self._target.timeout_s
        async with asyncio.timeout(timeout_s):
            answer: Completion = await self._client.complete(self._target.model, self._request(prompt), timeout_s)
            return answer

    def classify(self, text: str) -> Outcome:
        start = perf_counter_ns()
        try:
            answer = self._bridge.call(self._ask, self._prompt(text))
        except (TimeoutError, ProviderError) as exc:
            reason = exc.reason if isinstance(exc, ProviderError) else "timeout"
            call = LLMCall(self._client.name, self.backend.model or "", (perf_counter_ns() - start) / 1e6,
                           fallback_from=[reason])
            return Outcome(None, False, 0.0, "degraded", call)
        usage = answer.usage
        call = LLMCall(self._client.name, answer.model, (perf_counter_ns() - start) / 1e6,
                       usage.input_tokens + usage.cached_input_tokens, usage.output_tokens, usage.cached_input_tokens)
        none = answer.text == NONE_LABEL
        confidence = answer.confidence if answer.confidence is not None else 1.0
        return Outcome(None if none else answer.text, not none, confidence, "llm", call)

    def close(self) -> None:
        async def shut() -> None:
            if self._client is not None:
                await self._client.aclose()
            await self._http.aclose()

        self._bridge.close(last=shut)


def every_turn(ctx: MethodContext, sample: int | None) -> EveryTurnLLM:
    return EveryTurnLLM(ctx, sample)
