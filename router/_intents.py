"""Intent sets: declared in YAML, or derived from a labelled dataset (JSONL or CSV).

The label ``oos`` in a labelled file means out-of-scope: such rows are not an
intent, they are negative evidence for training and calibration.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import regex
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from router._rules import pattern_hazard
from router._strict import Strict, format_validation_error
from router._yaml_file import read_mapping
from router.errors import ConfigError

OOS = "oos"


class Intent(Strict):
    """One intent (skill trigger): examples for tier 1, optional rules for tier 0."""

    model_config = ConfigDict(frozen=True)
    name: str = Field(min_length=1, max_length=128, pattern=r"^\S+$")
    description: str = ""
    examples: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    negative_examples: tuple[str, ...] = ()
    skill: str | None = None

    @field_validator("name")
    @classmethod
    def _not_oos(cls, value: str) -> str:
        if value == OOS:
            raise ValueError(f"{OOS!r} is reserved for out-of-scope queries")
        return value

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                regex.compile(pattern)
            except regex.error as exc:
                raise ValueError(f"pattern {pattern!r} does not compile: {exc}") from exc
            # Refused here so a build names the file and the intent (router/_rules.py says why).
            hazard = pattern_hazard(pattern)
            if hazard is not None:
                raise ValueError(f"pattern {pattern!r} {hazard}")
        return value

    @model_validator(mode="after")
    def _has_evidence(self) -> Intent:
        if not (self.examples or self.patterns or self.keywords):
            raise ValueError("an intent needs at least one of examples, patterns or keywords")
        return self


class IntentSet(Strict):
    model_config = ConfigDict(frozen=True)
    intents: tuple[Intent, ...] = Field(min_length=1)
    # Out-of-scope examples (label ``oos`` in a labelled file): negatives for training.
    oos_examples: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> IntentSet:
        seen: set[str] = set()
        for intent in self.intents:
            if intent.name in seen:
                raise ValueError(f"intent name {intent.name!r} is declared twice")
            seen.add(intent.name)
        return self

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.intents]

    def content_hash(self) -> str:
        """sha256 of the canonical JSON form: any change to any intent changes it."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def get(self, name: str) -> Intent:
        for intent in self.intents:
            if intent.name == name:
                return intent
        raise KeyError(name)


@dataclass(frozen=True)
class Labelled:
    """Parallel lists of texts and labels (``oos`` for out-of-scope)."""

    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def intent_set_from_yaml(path: str | Path) -> IntentSet:
    path = Path(path)
    data = read_mapping(path, "intents file", "a mapping with an 'intents' list")
    try:
        return IntentSet.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path), data)) from exc


def read_labelled(path: str | Path) -> Labelled:
    """Read JSONL lines ``{"text", "intent"}`` or CSV ``text,category`` (header required)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"labelled file {path} does not exist")
    texts: list[str] = []
    labels: list[str] = []
    if path.suffix in {".jsonl", ".json"}:
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, label = row["text"], row["intent"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(f'{path}:{lineno}: expected {{"text": ..., "intent": ...}}: {exc}') from exc
            texts.append(str(text))
            labels.append(str(label))
    elif path.suffix == ".csv":
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"text", "category"} <= set(reader.fieldnames):
                raise ConfigError(f"{path}: CSV needs a header with 'text' and 'category', got {reader.fieldnames}")
            for row in reader:
                texts.append(row["text"])
                labels.append(row["category"])
    else:
        raise ConfigError(f"{path}: unknown labelled format {path.suffix!r} (use .jsonl or .csv)")
    if not texts:
        raise ConfigError(f"{path}: no labelled rows")
    return Labelled(texts, labels)


def intent_set_from_labelled(data: Labelled, descriptions: dict[str, str] | None = None) -> IntentSet:
    """One intent per label, its texts as examples; ``oos`` rows become out-of-scope examples."""
    grouped: dict[str, list[str]] = {}
    oos: list[str] = []
    for text, label in zip(data.texts, data.labels, strict=True):
        (oos if label == OOS else grouped.setdefault(label, [])).append(text)
    descriptions = descriptions or {}
    try:
        return IntentSet(
            intents=tuple(
                Intent(name=name, description=descriptions.get(name, name.replace("_", " ")), examples=tuple(ex))
                for name, ex in sorted(grouped.items())
            ),
            oos_examples=tuple(oos),
        )
    except ValidationError as exc:
        raise ConfigError(f"labelled data does not form a valid intent set: {exc}") from exc


def load_intent_source(path: str | Path) -> IntentSet:
    """An intent YAML, or a labelled JSONL/CSV file standing in for one."""
    path = Path(path)
    if path.suffix in {".yaml", ".yml"}:
        return intent_set_from_yaml(path)
    return intent_set_from_labelled(read_labelled(path))


def training_pairs(intents: IntentSet) -> Labelled:
    """Every example with its intent, plus out-of-scope and negative examples labelled ``oos``."""
    texts: list[str] = []
    labels: list[str] = []
    for intent in intents.intents:
        texts.extend(intent.examples)
        labels.extend([intent.name] * len(intent.examples))
        texts.extend(intent.negative_examples)
        labels.extend([OOS] * len(intent.negative_examples))
    texts.extend(intents.oos_examples)
    labels.extend([OOS] * len(intents.oos_examples))
    return Labelled(texts, labels)


def only(data: Labelled, keep: Sequence[bool]) -> Labelled:
    return Labelled(
        [t for t, k in zip(data.texts, keep, strict=True) if k],
        [lab for lab, k in zip(data.labels, keep, strict=True) if k],
    )
