"""Shared fixtures: a small real intent set, the real default (int8) ONNX encoder, one built index."""

from __future__ import annotations

from pathlib import Path

import pytest

from router import Builder, EncoderConfig, Router, RouterConfig

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def mini_intents() -> Path:
    return FIXTURES / "mini_intents.yaml"


@pytest.fixture(scope="session")
def mini_val() -> Path:
    return FIXTURES / "mini_val.jsonl"


@pytest.fixture(scope="session")
def mini_config(mini_intents: Path, mini_val: Path) -> RouterConfig:
    return RouterConfig(
        name="mini",
        intents=str(mini_intents),
        validation=str(mini_val),
        encoder=EncoderConfig(threads=1, cache_size=0),  # the default encoder (int8)
    )


@pytest.fixture(scope="session")
def mini_index(tmp_path_factory: pytest.TempPathFactory, mini_config: RouterConfig) -> Path:
    folder = tmp_path_factory.mktemp("indexes") / "mini"
    Builder(mini_config).build(folder)
    return folder


@pytest.fixture(scope="session")
def mini_router(mini_index: Path) -> Router:
    return Router.load(mini_index)
