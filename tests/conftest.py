"""Shared fixtures: a small real intent set, the real default (int8) ONNX encoder, one built index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from router import Builder, EncoderConfig, Router, RouterConfig
from router.testing import RedisServer, redis_server_path

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


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server of its own on a free port (tests marked ``redis``); ``kill``/``start`` restart it."""
    if redis_server_path() is None:
        pytest.fail("redis-server is not on PATH: apt-get install redis-server (the redis suite needs a real one)")
    with RedisServer() as server:
        yield server
