"""``DecisionRunnable``: the router's classification as a LangChain ``Runnable[RouterInput, Decision]``.

It runs through the base class's helpers (``_call_with_config`` and friends), so every call is a run
that callbacks and tracers see, named ``TieredRouter`` unless ``name=`` (or ``run_name``) says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig

from router._decision import Decision
from router._router import Router, Tiers
from router._validation import check_text
from router.errors import InputError
from router.langchain._input import query_text

# What the Runnable accepts: see ``query_text``.
RouterInput = str | Mapping[str, Any] | BaseMessage | Sequence[Any] | PromptValue


class DecisionRunnable(Runnable[RouterInput, Decision]):
    """A Runnable that returns the router's ``Decision`` for its input.

    ``key``: the dict key that holds the text (default ``"text"``); ``tiers="local"``: tiers 0-1 only.
    ``ainvoke`` is ``Router.aclassify`` on the caller's loop (not a thread); ``batch``/``abatch`` classify
    the whole list in one ``classify_many``/``aclassify_many`` (in slices of ``limits.max_batch``), and an
    input that holds no valid text fails on its own (``return_exceptions=True`` returns its ``InputError``).
    """

    def __init__(self, router: Router, *, key: str = "text", tiers: Tiers = "all", name: str | None = None) -> None:
        self.router, self.key, self.tiers = router, key, tiers
        self.name = name or "TieredRouter"

    def __repr__(self) -> str:
        return f"DecisionRunnable(name={self.name!r}, key={self.key!r}, tiers={self.tiers!r})"

    def text(self, value: Any) -> str:
        """The text this Runnable would classify for ``value``; ``InputError`` when it holds none."""
        return query_text(value, self.key)

    # -- one input -----------------------------------------------------------------------------------
    def invoke(self, input: RouterInput, config: RunnableConfig | None = None, **kwargs: Any) -> Decision:
        return self._call_with_config(self._classify, input, config)

    async def ainvoke(self, input: RouterInput, config: RunnableConfig | None = None, **kwargs: Any) -> Decision:
        return await self._acall_with_config(self._aclassify, input, config)

    def _classify(self, value: RouterInput) -> Decision:
        return self.router.classify(self.text(value), tiers=self.tiers)

    async def _aclassify(self, value: RouterInput) -> Decision:
        return await self.router.aclassify(self.text(value), tiers=self.tiers)

    # -- many inputs: one batch classification, one run per input --------------------------------------
    def batch(self, inputs: list[RouterInput], config: RunnableConfig | list[RunnableConfig] | None = None, *,
              return_exceptions: bool = False, **kwargs: Any | None) -> list[Decision]:
        return self._batch_with_config(self._classify_many, inputs, config, return_exceptions=return_exceptions)

    async def abatch(self, inputs: list[RouterInput], config: RunnableConfig | list[RunnableConfig] | None = None,
                     *, return_exceptions: bool = False, **kwargs: Any | None) -> list[Decision]:
        return await self._abatch_with_config(self._aclassify_many, inputs, config,
                                              return_exceptions=return_exceptions)

    def _checked(self, inputs: list[RouterInput]) -> tuple[dict[int, Exception], list[str]]:
        """Each input's text checked on its own, so one bad input fails alone rather than the whole batch:
        the refused ones by position, and the texts of the rest in order."""
        refused: dict[int, Exception] = {}
        texts: list[str] = []
        for i, value in enumerate(inputs):
            try:
                texts.append(check_text(self.text(value), self.router.limits.max_text_chars, f"inputs[{i}]"))
            except InputError as exc:
                refused[i] = exc
        return refused, texts

    def _slices(self, texts: list[str]) -> list[list[str]]:
        size = self.router.limits.max_batch
        return [texts[i:i + size] for i in range(0, len(texts), size)]

    def _classify_many(self, inputs: list[RouterInput]) -> list[Decision | Exception]:
        refused, texts = self._checked(inputs)
        decisions = [d for part in self._slices(texts) for d in self.router.classify_many(part, tiers=self.tiers)]
        return _merged(len(inputs), refused, decisions)

    async def _aclassify_many(self, inputs: list[RouterInput]) -> list[Decision | Exception]:
        refused, texts = self._checked(inputs)
        decisions = [d for part in self._slices(texts)
                     for d in await self.router.aclassify_many(part, tiers=self.tiers)]
        return _merged(len(inputs), refused, decisions)


def _merged(n: int, refused: dict[int, Exception], decisions: list[Decision]) -> list[Decision | Exception]:
    """The Decisions back in their inputs' places, between the refused inputs' errors."""
    given = iter(decisions)
    return [refused[i] if i in refused else next(given) for i in range(n)]
