"""Where a build's intents and held-out split come from: a shipped dataset, or the config's files."""

from __future__ import annotations

from dataclasses import dataclass

from router._config import RouterConfig
from router._intents import IntentSet, Labelled, intent_set_from_labelled, load_intent_source, read_labelled
from router.datasets import load_dataset


@dataclass
class Sources:
    intents: IntentSet
    validation: Labelled | None
    description: str



def resolve_sources(config: RouterConfig) -> Sources:
    if config.dataset is not None:
        splits = load_dataset(config.dataset)
        return Sources(intent_set_from_labelled(splits.train), splits.val, f"dataset:{config.dataset}")
    assert config.intents is not None  # guaranteed by RouterConfig's validator
    val = read_labelled(config.validation) if config.validation else None
    return Sources(load_intent_source(config.intents), val, str(config.intents))
