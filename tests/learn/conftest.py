"""What the learning tests share: the Router a module's teaching tests take turns on (``load``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from router import Router
from router._artifact import IndexArtifact
from router.learn import LearningConfig
from router.learn._learner import Learner
from router.learn._log import build_log

LoadFn = Callable[..., Router]


@dataclass
class Reused:
    router: Router
    built: IndexArtifact


@pytest.fixture(scope="module")
def reused(mini_index: Path) -> Iterator[Reused]:
    """One Router the teaching tests of this module take turns on (loading one costs an encoder load)."""
    router = Router.load(mini_index, llm="off", learning="off")
    yield Reused(router, router.artifact)
    router.close()


def reset(reused: Reused) -> None:
    if reused.router.learning is not None:
        reused.router.learning.close()
        reused.router.learning = None
    reused.router._install(reused.built)


@pytest.fixture
def load(reused: Reused, mini_index: Path, tmp_path: Path) -> Iterator[LoadFn]:
    """``load(**learning fields)``: a Router learning into its own log in tmp_path, the reservoir off unless
    asked for. By default the module's Router, back at its built state with a new Learner (what
    ``Router.load`` wires up); ``fresh=True``: a ``Router.load`` of its own (closed at the end)."""
    routers: list[Router] = []

    def _load(log: Path | None = None, protected: tuple[str, ...] = (), fresh: bool = False,
              **fields: Any) -> Router:
        fields.setdefault("reservoir_share", 0.0)
        config = LearningConfig(log=str(log or tmp_path / "l.jsonl"), **fields)
        if fresh:
            router = Router.load(mini_index, llm="off", learning=config, protected_intents=protected)
            routers.append(router)
            return router
        reset(reused)
        reused.router.learning = Learner(reused.router, config, build_log(config, mini_index), protected)
        return reused.router

    yield _load
    reset(reused)
    for router in routers:
        router.close()


def learner_of(router: Router) -> Learner:
    assert router.learning is not None
    return router.learning
