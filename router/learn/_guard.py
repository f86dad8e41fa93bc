"""What feedback is taken: the checks every item passes before it is logged, and the label map they use.

A text is known by its normalised form (case and spacing do not count). An item that contradicts a
built example, an out-of-scope example or an earlier learned one is refused (409) unless a person says
so on purpose (``source="human"``, ``override=True``). Intents that map to a ``writes`` skill learn only
from people: an LLM's answer never teaches the router to take an action that changes data.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from router._intents import OOS, IntentSet
from router._validation import check_text
from router.errors import FeedbackConflict, FeedbackNotAllowed, InputError, UnknownIntent
from router.learn._entry import LogEntry, normalise

SOURCES = ("human", "llm")


@dataclass(frozen=True, slots=True)
class Known:
    label: str  # an intent, or ``oos``
    where: str  # "an example", "a learned example", ...


class FeedbackGuard:
    def __init__(self, intents: IntentSet, learnable: Collection[str], max_text_chars: int,
                 protected: Collection[str] = ()) -> None:
        self.intents = intents
        self.learnable = frozenset(learnable)  # intents with examples: each is a class of the heads
        self.max_text_chars = max_text_chars
        self.protected = frozenset(protected)
        self.labels: dict[str, Known] = {}
        for intent in intents.intents:
            for text in intent.examples:
                self.labels.setdefault(normalise(text), Known(intent.name, "an example"))
            for text in intent.negative_examples:
                self.labels.setdefault(normalise(text), Known(OOS, f"a negative example of {intent.name!r}, so"))
        for text in intents.oos_examples:
            self.labels.setdefault(normalise(text), Known(OOS, "an out-of-scope example"))

    def check(self, text: object, intent: object, out_of_scope: object, source: object, override: object) -> str:
        """The label (an intent or ``oos``) the item teaches; raises when it may not be taken."""
        checked = check_text(text, self.max_text_chars)
        if not isinstance(out_of_scope, bool):
            raise InputError(f"out_of_scope must be true or false, got {out_of_scope!r:.40}")
        if not isinstance(override, bool):
            raise InputError(f"override must be true or false, got {override!r:.40}")
        if source not in SOURCES:
            raise InputError(f"source={source!r:.40} is not one of {list(SOURCES)}")
        if out_of_scope == (intent is not None):
            raise InputError(f"give exactly one of intent (got {intent!r:.60}) or out_of_scope=true "
                             f"(got {out_of_scope})")
        if override and source != "human":
            raise InputError(f"override=true is for source='human' only (got source={source!r})")
        label = OOS
        if intent is not None:
            if not isinstance(intent, str) or intent not in self.intents.names:
                known = sorted(self.learnable)
                raise UnknownIntent(f"intent={intent!r:.80} is not an intent of this index ({len(known)} known, "
                                    f"e.g. {', '.join(known[:5])})")
            if intent not in self.learnable:
                raise UnknownIntent(f"intent={intent!r} has no examples in this index (rules only), so it has no "
                                    "class to learn examples for; add examples to it and rebuild")
            if intent in self.protected and source != "human":
                raise FeedbackNotAllowed(f"intent={intent!r} maps to a skill that writes: it learns only from "
                                         f"source='human', not source={source!r}")
            label = intent
        known_as = self.labels.get(normalise(checked))
        if known_as is not None and known_as.label != label and not override:
            raise FeedbackConflict(checked, known_as.label, label, known_as.where)
        return label

    def duplicate(self, text: str, label: str) -> bool:
        """The text is already known with this very label: nothing to learn."""
        known_as = self.labels.get(normalise(text))
        return known_as is not None and known_as.label == label

    def record(self, entry: LogEntry) -> None:
        """A learned entry (trained or held out) now defines its text's label; a later override replaces it."""
        key = normalise(entry.text)
        if entry.override or key not in self.labels:
            self.labels[key] = Known(entry.label, "a learned example")
