"""Mine keyword rules for tier 0 from labelled examples.

A candidate is a 1-3 word n-gram that, in the training examples, occurs only in
one intent's examples (never out-of-scope) with enough support. It is kept only
if its precision on the validation split (out-of-scope queries counting as
errors) reaches the bar (default 99.5%) with enough validation hits.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import regex

from router._intents import OOS, Labelled

_WORD = regex.compile(r"\w+")


@dataclass(frozen=True)
class MinedRule:
    intent: str
    keyword: str
    train_support: int
    val_support: int
    val_precision: float


def _ngrams(text: str, max_n: int) -> set[str]:
    words = _WORD.findall(text.lower())
    grams: set[str] = set()
    for n in range(1, max_n + 1):
        for i in range(len(words) - n + 1):
            grams.add(" ".join(words[i : i + n]))
    return grams


def mine_keyword_rules(
    train: Labelled,
    val: Labelled,
    min_precision: float = 0.995,
    min_train_support: int = 8,
    min_val_support: int = 3,
    max_ngram: int = 3,
    max_per_intent: int = 3,
) -> list[MinedRule]:
    occurrences: dict[str, Counter[str]] = defaultdict(Counter)
    for text, label in zip(train.texts, train.labels, strict=True):
        for gram in _ngrams(text, max_ngram):
            occurrences[gram][label] += 1
    candidates: dict[str, str] = {}
    for gram, counts in occurrences.items():
        if len(counts) == 1:
            (label, support), = counts.items()
            if label != OOS and support >= min_train_support:
                candidates[gram] = label
    val_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for text, label in zip(val.texts, val.labels, strict=True):
        for gram in _ngrams(text, max_ngram) & candidates.keys():
            val_counts[gram][label] += 1
    kept: list[MinedRule] = []
    for gram, intent in candidates.items():
        hits = val_counts.get(gram)
        if not hits:
            continue
        total = sum(hits.values())
        precision = hits[intent] / total
        if total >= min_val_support and precision >= min_precision:
            kept.append(MinedRule(intent, gram, occurrences[gram][intent], total, precision))
    # Per intent keep the best-supported rules, and drop one that contains a kept shorter rule.
    by_intent: dict[str, list[MinedRule]] = defaultdict(list)
    for rule in sorted(kept, key=lambda r: (-r.val_support, -r.train_support, len(r.keyword), r.keyword)):
        chosen = by_intent[rule.intent]
        if len(chosen) >= max_per_intent:
            continue
        if any(f" {c.keyword} " in f" {rule.keyword} " for c in chosen):
            continue
        chosen.append(rule)
    return sorted((r for rules in by_intent.values() for r in rules), key=lambda r: (r.intent, r.keyword))
