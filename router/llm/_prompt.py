"""The tier-2 prompt, laid out for prefix caching.

The system message is static: instructions, then (optionally) every intent with its
description. It is byte-identical on every call, so vLLM's prefix cache and llama.cpp's
prompt cache process it once. Only the user message changes: the query, the top-k
candidates with a description and examples, and ``none``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

from router._intents import IntentSet
from router.errors import ConfigError

NONE_LABEL = "none"

_INSTRUCTIONS = (
    "You route the messages a user sends to an assistant. Each message belongs to at most one intent. "
    "You are given the message and a short list of options. Answer with exactly one option label, "
    f"copied as written, or {NONE_LABEL} when the message fits none of the options."
)


@dataclass(frozen=True, slots=True)
class Prompt:
    system: str
    user: str
    labels: tuple[str, ...]  # what the answer must be one of; the last is always "none"
    query: str

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


CONTENT_FREE = "N/A"


def content_free(prompt: Prompt) -> Prompt:
    """The same prompt with the message replaced by a content-free one ("N/A").

    Label scoring subtracts each label's log-likelihood under this prompt from its score under
    the real one, which removes the model's prior for a label (a small model's pull towards
    ``none`` or a favourite word) and keeps what the message itself says.
    """
    head = f"Message: {prompt.query}"
    assert prompt.user.startswith(head)
    return Prompt(prompt.system, f"Message: {CONTENT_FREE}" + prompt.user[len(head):], prompt.labels, CONTENT_FREE)


class PromptBuilder:
    def __init__(self, intents: IntentSet, *, examples_per_candidate: int = 1, catalogue: bool = True,
                 shuffle: bool = True) -> None:
        if NONE_LABEL in intents.names:
            raise ConfigError(f"intent name {NONE_LABEL!r} is reserved by the LLM tier for 'fits no option'; rename it")
        self._describe = {i.name: (i.description or i.name.replace("_", " ")) for i in intents.intents}
        self.names = list(self._describe)
        self._examples = {i.name: i.examples[:examples_per_candidate] for i in intents.intents}
        self.shuffle = shuffle
        lines = [_INSTRUCTIONS]
        if catalogue:
            lines.append("\nKnown intents:")
            lines.extend(f"- {name}: {desc}" for name, desc in self._describe.items())
        self.system = "\n".join(lines)

    def build(self, query: str, candidates: Sequence[str]) -> Prompt:
        order = list(dict.fromkeys(c for c in candidates if c in self._describe))
        if self.shuffle:
            # Seeded by the query, so the same query always gets the same prompt (cacheable, reproducible).
            seed = int.from_bytes(hashlib.blake2b(query.encode(), digest_size=8).digest(), "little")
            random.Random(seed).shuffle(order)
        lines = [f"Message: {query}", "", "Options:"]
        for name in order:
            examples = "; ".join(f'"{e}"' for e in self._examples[name])
            lines.append(f"- {name}: {self._describe[name]}" + (f" (e.g. {examples})" if examples else ""))
        lines.append(f"- {NONE_LABEL}: the message fits none of the options above")
        lines.append("\nAnswer with one label.")
        return Prompt(self.system, "\n".join(lines), (*order, NONE_LABEL), query)
