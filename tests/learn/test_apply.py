"""Learned states (``Refitter``): learned vectors join their intent's block and the top layer of the vector
index, out-of-scope ones become their own block, masked rows leave, heads are refitted, the base is
never touched."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from router import Router
from router._artifact import IndexArtifact
from router._head import LinearHead
from router.learn import LearningConfig, LogEntry
from router.learn._apply import Refitter
from router.vectors import LayeredIndex

TRANSLATE = "how do i ask about the weather in chinese"
OOS = "am kind of busy now"
BUILT = "what is the weather like in denver"


@pytest.fixture(scope="module")
def router(mini_index: Path) -> Iterator[Router]:
    router = Router.load(mini_index, llm="off", learning="off")
    yield router
    router.close()


def learn(text: str, intent: str | None) -> LogEntry:
    return LogEntry(op="learn", text=text, intent=intent, out_of_scope=intent is None)


def sizes(state: IndexArtifact) -> list[int]:
    return np.diff(state.offsets).tolist()


def snapshot(state: IndexArtifact) -> dict[str, np.ndarray]:
    arrays = {"examples": state.examples.copy(), "offsets": state.offsets.copy(),
              "weights": state.head.weights.copy(), "bias": state.head.bias.copy()}
    if state.static is not None:
        arrays |= {"s_examples": state.static.examples.copy(), "s_weights": state.static.head.weights.copy()}
    return arrays


def test_learned_examples_join_their_block_and_the_top_layer(router: Router) -> None:
    base = router.artifact
    kept = snapshot(base)
    names = list(base.head_intents)
    t = names.index("translate")
    refitter = Refitter(base, router.encoder, LearningConfig())
    entry = learn(TRANSLATE, "translate")
    state = refitter.state(base, [entry])

    expected = sizes(base)
    expected[t] += 1
    assert sizes(state) == expected and len(state.examples) == len(base.examples) + 1
    vector = router.encoder.encode([TRANSLATE])[0]
    block = state.examples[state.offsets[t]:state.offsets[t + 1]]
    assert np.allclose(block[-1], vector, atol=1e-5)  # the learned row comes after the built ones
    assert isinstance(state.vectors, LayeredIndex) and state.vectors.base is base.vectors
    assert len(state.vectors) == len(base.vectors) + 1
    sims, ids = state.vectors.search(vector[None, :].astype(np.float32), 1)
    assert ids[0, 0] == len(base.vectors) and sims[0, 0] == pytest.approx(1.0, abs=1e-4)
    assert state.oos_examples is None
    # The head now answers the learned text with its intent; the static tier's head learned it too.
    assert int(state.head.probabilities(vector[None, :].astype(np.float64)).argmax()) == t
    assert state.static is not None and base.static is not None
    assert sizes(state)[t] == int(np.diff(state.static.offsets)[t])
    assert len(state.static.examples) == len(base.static.examples) + 1
    # The base is as built: a learned state is a new object, never an edit.
    for key, value in snapshot(base).items():
        assert np.array_equal(value, kept[key]), key
    assert state.manifest is base.manifest and state.intents is base.intents


def test_out_of_scope_examples_are_their_own_block(router: Router) -> None:
    base = router.artifact
    refitter = Refitter(base, router.encoder, LearningConfig())
    state = refitter.state(base, [learn(OOS, None)])
    assert sizes(state) == sizes(base) and len(state.vectors) == len(base.vectors)
    assert state.oos_examples is not None and state.oos_examples.shape == (1, base.examples.shape[1])
    assert np.allclose(state.oos_examples[0], router.encoder.encode([OOS])[0], atol=1e-5)
    assert state.static is not None and state.static.oos_examples is not None
    assert state.static.oos_examples.shape == (1, state.static.examples.shape[1])


def test_a_state_is_built_from_the_base_not_on_top_of_the_last(router: Router) -> None:
    base = router.artifact
    refitter = Refitter(base, router.encoder, LearningConfig())
    first = refitter.state(base, [learn(TRANSLATE, "translate")])
    second = refitter.state(first, [learn(TRANSLATE, "translate"), learn("wassup", "greeting")])
    assert len(second.examples) == len(base.examples) + 2  # not + 3: the first state's rows are not kept
    assert isinstance(second.vectors, LayeredIndex) and second.vectors.base is base.vectors
    assert len(second.vectors) == len(base.vectors) + 2
    # The heads are warm-started from the state given: its weights, not the base's, are the start.
    assert not np.array_equal(second.head.weights, first.head.weights)


def test_masked_rows_leave_the_blocks(router: Router) -> None:
    base = router.artifact
    names = list(base.head_intents)
    w, t = names.index("weather"), names.index("translate")
    vector = router.encoder.encode([BUILT])[0]
    lo, hi = int(base.offsets[w]), int(base.offsets[w + 1])
    row = lo + int(np.argmax(base.examples[lo:hi] @ vector))
    masked = np.zeros(len(base.examples), dtype=bool)
    masked[row] = True
    refitter = Refitter(base, router.encoder, LearningConfig())
    state = refitter.state(base, [LogEntry(op="learn", text=BUILT, intent="translate", override=True)], masked)
    expected = sizes(base)
    expected[w] -= 1
    expected[t] += 1
    assert sizes(state) == expected
    assert state.static is not None and np.diff(state.static.offsets).tolist() == expected
    weather_block = state.examples[state.offsets[w]:state.offsets[w + 1]]
    assert float((weather_block @ vector).max()) < 0.9999  # the built row is gone from weather


def test_a_reject_class_learns_out_of_scope_examples(router: Router) -> None:
    base = router.artifact
    n = base.head.weights.shape[1]
    head = LinearHead(np.hstack([base.head.weights, np.zeros((base.head.weights.shape[0], 1), np.float32)]),
                      np.append(base.head.bias, np.float32(-2.0)).astype(np.float32), reject=True)
    with_reject = dataclasses.replace(base, head=head)
    refitter = Refitter(with_reject, router.encoder, LearningConfig())
    state = refitter.state(with_reject, [learn(OOS, None)])
    assert state.head.reject and state.head.n_classes == n
    x = router.encoder.encode([OOS]).astype(np.float64)

    def reject_share(h: LinearHead) -> float:
        logits = x @ h.weights + h.bias
        p = np.exp(logits - logits.max())
        return float(p[0, -1] / p.sum())

    assert reject_share(state.head) > reject_share(head)


def test_each_text_is_encoded_once(router: Router) -> None:
    base = router.artifact
    refitter = Refitter(base, router.encoder, LearningConfig())
    entry = learn(TRANSLATE, "translate")
    refitter.encode([entry])
    first = refitter.vectors([entry])
    calls: list[list[str]] = []
    real = router.encoder

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def encode(self, texts: list[str]) -> np.ndarray:
            calls.append(list(texts))
            return real.encode(texts)

    refitter.encoder = Counting()  # type: ignore[assignment]
    refitter._tokens = None  # the transformer path, so that encode() is what would run
    refitter.encode([entry])
    assert calls == [] and np.array_equal(refitter.vectors([entry]), first)
