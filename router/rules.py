"""Tier 0: every pattern and keyword of every intent in ONE compiled ``regex`` alternation.

Each intent is a named group ``__iN``; guard rules (PII, prompt injection) are
groups ``__gN`` in the same pass. A query is scanned once whatever the number of
intents. Named sub-groups of user patterns become slots. When rules of two
different intents match, tier 0 does not decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import regex

from router.errors import ConfigError

_INTENT = "__i"
_GUARD = "__g"

# Guards mark a query; they never decide its intent. Card numbers are Luhn-checked after the match.
DEFAULT_GUARDS: dict[str, str] = {
    "pii_card_number": r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)",
    "pii_email": r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    "prompt_injection": (
        r"\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+|the\s+)?(?:previous|prior|above|earlier)\s+"
        r"(?:instructions|prompts?|rules)\b|\bsystem\s+prompt\b|\byou\s+are\s+now\s+(?:in\s+)?(?:dan|developer\s+mode)\b"
    ),
}


@dataclass(frozen=True)
class IntentRules:
    intent: str
    patterns: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()


@dataclass
class RuleMatch:
    intent: str | None = None
    matched: list[str] = field(default_factory=list)
    slots: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)


def _trie_regex(owner: dict[str, str]) -> str:
    root: dict[str, dict] = {}  # type: ignore[type-arg]
    for word, group in owner.items():
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = group  # type: ignore[assignment]

    def emit(node: dict) -> str:  # type: ignore[type-arg]
        parts = [regex.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if "" in node:
            parts.append(f"(?P<{node['']}>)")  # last, so the longer keyword is tried first
        return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"

    return emit(root)


def _luhn_ok(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    total = 0
    for pos, digit in enumerate(reversed(digits)):
        if pos % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


class RuleSet:
    """The compiled tier-0 matcher."""

    def __init__(self, rules: Sequence[IntentRules], guards: dict[str, str] | None = None) -> None:
        self.rules = [r for r in rules if r.patterns or r.keywords]
        self.guards = dict(DEFAULT_GUARDS if guards is None else guards)
        self._intent_of: dict[str, str] = {}
        self._guard_of: dict[str, str] = {}
        branches: list[str] = []
        keyword_owner: dict[str, str] = {}
        for n, rule in enumerate(self.rules):
            group = f"{_INTENT}{n}"
            self._intent_of[group] = rule.intent
            if rule.patterns:
                branches.append(f"(?P<{group}>" + "|".join(rule.patterns) + ")")
            for word in rule.keywords:
                key = word.lower()
                other = keyword_owner.setdefault(key, group)
                if other != group:
                    raise ConfigError(
                        f"keyword {word!r} is declared by intents {self._intent_of[other]!r} and {rule.intent!r}"
                    )
        if keyword_owner:
            # One trie over all keywords, each leaf closing with an empty group named after its
            # intent (the regex module allows repeated names): a query is tested char by char once
            # instead of against every keyword of every intent.
            branches.insert(0, r"\b" + _trie_regex(keyword_owner) + r"\b")
        for n, (name, pattern) in enumerate(self.guards.items()):
            group = f"{_GUARD}{n}"
            self._guard_of[group] = name
            branches.append(f"(?P<{group}>{pattern})")
        self.source = "|".join(branches)
        try:
            self._pattern = regex.compile(self.source, regex.IGNORECASE) if branches else None
        except regex.error as exc:
            raise ConfigError(f"rules do not compile together: {exc}") from exc
        # Group names a user pattern declared: these become slots.
        self._slot_names = [
            g for g in (self._pattern.groupindex if self._pattern else {})
            if not g.startswith((_INTENT, _GUARD))
        ]

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, text: str) -> RuleMatch:
        result = RuleMatch()
        if self._pattern is None:
            return result
        intents: list[str] = []
        for m in self._pattern.finditer(text):
            group = m.lastgroup
            if group is None:
                continue
            if group in self._intent_of:
                name = self._intent_of[group]
                if name not in intents:
                    intents.append(name)
                for slot in self._slot_names:
                    value = m.group(slot)
                    if value is not None:
                        result.slots[slot] = value
            else:
                guard = self._guard_of[group]
                if guard == "pii_card_number" and not _luhn_ok(m.group()):
                    continue
                if guard not in result.flags:
                    result.flags.append(guard)
        result.matched = intents
        if len(intents) == 1:
            result.intent = intents[0]
        else:
            result.slots = {}
        return result
