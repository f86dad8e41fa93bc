"""Serving a fine-tuned encoder costs what the frozen one costs: the same graph, other weights.

Run with `make bench` after building a fine-tuned CLINC150 index (the [train] extra, ~8 minutes)::

    router build --dataset clinc150 --name clinc150-ft --finetune

(or name another tuned index with ``ROUTER_BENCH_TUNED_INDEX``).

Each benchmark is one transformer pass of one query, one thread, no query cache, on the tuned graph
(the index's encoder.onnx), the frozen fp32 graph exported from the same base weights, and the int8
default; the three run in one session so their ratio is what the report shows. Skipped without a
tuned index: building one here would take minutes.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from router import EncoderConfig, Router
from router._artifact import read_manifest
from router._paths import indexes_dir
from router.encoders import Encoder, build_encoder
from router.errors import IndexLoadError

from .conftest import QUERY, TRANSFORMER_QUERY

TUNED_INDEX = os.environ.get("ROUTER_BENCH_TUNED_INDEX", "clinc150-ft")
ENCODER = EncoderConfig(threads=1, cache_size=0)


@pytest.fixture(scope="module")
def tuned() -> Router:
    folder = indexes_dir() / TUNED_INDEX
    try:
        manifest = read_manifest(folder)
    except IndexLoadError:
        pytest.skip(f"no fine-tuned index {folder}: router build --dataset clinc150 --name {TUNED_INDEX} --finetune")
    if manifest.finetune is None:
        pytest.skip(f"index {folder} is not fine-tuned")
    return Router.load(folder, encoder=ENCODER, static=False)


@pytest.fixture(scope="module")
def frozen_fp32(tuned: Router) -> Encoder:
    assert tuned.artifact.manifest.finetune is not None
    return build_encoder(ENCODER.model_copy(update={"model": tuned.artifact.manifest.finetune.base_model}))


@pytest.fixture(scope="module")
def frozen_int8() -> Encoder:
    return build_encoder(ENCODER)


def test_encoder_tuned(benchmark: Any, tuned: Router) -> None:
    assert "+ft@" in tuned.encoder.encoder_id
    benchmark(tuned.encoder.encode, [TRANSFORMER_QUERY])


def test_encoder_frozen_fp32(benchmark: Any, frozen_fp32: Encoder) -> None:
    benchmark(frozen_fp32.encode, [TRANSFORMER_QUERY])


def test_encoder_frozen_int8(benchmark: Any, frozen_int8: Encoder) -> None:
    benchmark(frozen_int8.encode, [TRANSFORMER_QUERY])


def test_classify_tuned(benchmark: Any, tuned: Router) -> None:
    decision = benchmark(tuned.classify, QUERY)
    assert decision.intent == "balance"
