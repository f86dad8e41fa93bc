"""An in-memory provider for tests and benchmarks: answers at once, no model.

A structured choice gets the scripted answer for the request's ``query`` when one is given, else
the first offered label; a request without choices gets its scripted answer, else ``FIXED_TEXT``.
So it measures the pipeline around a model call with the model's time at zero. ``stream`` gives the
same answer as a few text pieces (split after each space), then its ``StreamEnd``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from router.providers._base import ChatRequest, Completion, StreamEnd, StreamEvent, TextDelta, Usage, checked_choice
from router.providers._config import ProviderConfig

FIXED_TEXT = "ok"


class MemoryProvider:
    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.answers = dict(config.answers)
        self.calls = 0

    async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion:
        self.calls += 1
        scripted = self.answers.get(request.query) if request.query is not None else None
        if request.choices is None:
            return Completion(text=scripted if scripted is not None else FIXED_TEXT, usage=Usage(), model=model)
        label = scripted if scripted is not None else request.choices[0]
        return Completion(text=checked_choice(self.name, label, request.choices), usage=Usage(), model=model)

    async def stream(self, model: str, request: ChatRequest, timeout_s: float) -> AsyncIterator[StreamEvent]:
        completion = await self.complete(model, request, timeout_s)
        for piece in re.split(r"(?<= )", completion.text):
            if piece:
                yield TextDelta(piece)
        yield StreamEnd(completion)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None
