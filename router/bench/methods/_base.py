"""What a compared method is: built once, then asked about one query at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from router._config import EncoderConfig
from router._decision import LLMCall
from router.bench._data import BenchData
from router.llm._config import LLMConfig


@dataclass(slots=True)
class Outcome:
    """One method's answer to one query.

    ``guess`` is its top-1 intent at full coverage (None when it names none, e.g. an LLM's
    ``none``); ``accepted`` says it acted on it; ``confidence`` orders queries for the
    coverage curve; ``tier`` says which stage answered.
    """

    guess: str | None
    accepted: bool
    confidence: float
    tier: str
    llm: LLMCall | None = None


@dataclass
class MethodContext:
    """What every method is built from: the same data, encoder settings, LLM and scratch folder.

    ``shared`` lets one method reuse another's artefact (tier 2 reuses the tiers-0-1 index)."""

    data: BenchData
    encoder: EncoderConfig
    llm: LLMConfig
    scratch: Path
    mine_rules: bool = False
    # The fine-tuned row's epochs (``--finetune-epochs``); its other settings are FinetuneConfig's defaults.
    finetune_epochs: int = 3
    shared: dict[str, object] = field(default_factory=dict)


class Method(Protocol):
    name: str
    # Test queries it answers: None for all of them, else the size of the seeded sample.
    sample: int | None
    # What its build time covers, and anything a reader should know, for the report.
    notes: list[str]

    def build(self) -> float:
        """Build from the context's data; return the seconds a user would wait for it."""
        ...

    def classify(self, text: str) -> Outcome: ...

    def close(self) -> None: ...


# Builds a method for a context; the int is its sample size (None: every test query).
MethodFactory = Callable[[MethodContext, int | None], Method]
