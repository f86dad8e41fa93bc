"""An in-memory tier-2 backend for tests and benchmarks: answers at once, no model.

It picks the scripted answer for the query when one is given, else the first offered
label, so it measures the pipeline around an LLM call with the model's time at zero.
"""

from __future__ import annotations

from router.errors import BadResponse
from router.llm.base import LLMAnswer
from router.llm.config import LLMBackendConfig
from router.llm.prompt import Prompt


class MemoryLLM:
    def __init__(self, config: LLMBackendConfig) -> None:
        self.name = config.label
        self.model = config.model or "memory"
        self.answers = dict(config.answers)
        self.concurrency = config.max_concurrency
        self.calls = 0

    async def choose(self, prompt: Prompt) -> LLMAnswer:
        self.calls += 1
        label = self.answers.get(prompt.query, prompt.labels[0])
        if label not in prompt.labels:
            raise BadResponse(self.name, f"answer {label!r} is not one of the offered labels {list(prompt.labels)}")
        return LLMAnswer(label=label, model=self.model)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None
