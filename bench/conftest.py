"""Benchmarks run on the built-in default index (CLINC150), built here if missing.

The index is built with the static tier (tier 1a); ``router`` serves it, ``router_static_off``
serves the same index without it, so the two differ only by that tier.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from router import Builder, EncoderConfig, Router, RouterConfig
from router._artifact import read_manifest
from router._paths import indexes_dir
from router.datasets import load_dataset
from router.errors import IndexLoadError

# Settled by the static tier on the default index (checked where it is used).
QUERY = "what is my bank balance"
# Passed on by the static tier, accepted by the transformer (tier 1b).
TRANSFORMER_QUERY = "can i move some money around"
# One thread, no query cache: the cost of a query the router has not seen.
ENCODER = EncoderConfig(threads=1, cache_size=0)


def _needs_build(folder: Path) -> bool:
    """Missing, unreadable by this version (a format change), or built without the static tier."""
    try:
        return read_manifest(folder).static is None
    except IndexLoadError:
        return True


@pytest.fixture(scope="session")
def index_folder() -> Path:
    folder = indexes_dir() / "default"
    if _needs_build(folder):
        Builder(RouterConfig(name="default", dataset="clinc150")).build(folder)
    return folder


@pytest.fixture(scope="session")
def router(index_folder: Path) -> Router:
    loaded = Router.load(index_folder, encoder=ENCODER, static=True)
    assert loaded.chain.names[:3] == ["rules", "static", "embedding"]
    return loaded


@pytest.fixture(scope="session")
def router_static_off(index_folder: Path) -> Router:
    loaded = Router.load(index_folder, encoder=ENCODER, static=False)
    assert "static" not in loaded.chain.names
    return loaded


def shuffled_test_queries(seed: int = 0) -> list[str]:
    """Every CLINC150 test query (in scope and out of scope), in a seeded random order, so that
    any prefix carries the split's real mix of intents and hence the static tier's real share."""
    texts = list(load_dataset("clinc150").test.texts)
    random.Random(seed).shuffle(texts)
    return texts


@pytest.fixture(scope="session")
def clinc_queries() -> list[str]:
    return shuffled_test_queries()
