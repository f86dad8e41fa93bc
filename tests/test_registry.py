"""One registry shape for every backend family: an unknown name is a ConfigError naming the field, the value
and the known names (router/_registry.py)."""

from __future__ import annotations

from typing import Any

import pytest

from router._registry import Registry
from router.errors import ConfigError


def test_the_helper_registers_looks_up_and_refuses() -> None:
    reg: Registry[int] = Registry("widget", "widgets.kind", {"b": 2})

    @reg.register("a")
    def one() -> int:
        return 1

    assert reg.get("a") is one and reg.get("b") == 2 and reg["b"] == 2
    assert reg.names() == ["a", "b"] and list(reg) == ["b", "a"] and len(reg) == 2  # iteration: insertion order
    assert "a" in reg and "c" not in reg
    with pytest.raises(ConfigError, match=r"^widgets\.kind='c': unknown widget; known: a, b$"):
        reg.get("c")
    with pytest.raises(ConfigError, match=r"^llm\.backends\[0\]\.kind='c': unknown widget"):
        reg.get("c", field="llm.backends[0].kind")
    with pytest.raises(ConfigError):  # never a bare KeyError
        reg["c"]


def _families() -> list[tuple[str, Registry[Any], str]]:
    from router.bench.methods import METHODS
    from router.dispatch._trace import TRACE_SINKS
    from router.encoders import ENCODERS
    from router.tiers import TIERS
    from router.vectors import VECTOR_INDEXES

    return [("encoder.backend", ENCODERS, "onnx"), ("vector_index.kind", VECTOR_INDEXES, "flat"),
            ("tiers", TIERS, "rules"), ("trace.sink", TRACE_SINKS, "jsonl"), ("methods", METHODS, "tiers01")]


@pytest.mark.parametrize("field, registry, known", _families(), ids=lambda v: v if isinstance(v, str) else "")
def test_an_unknown_name_of_every_family_lists_the_known_ones(field: str, registry: Registry[Any], known: str) -> None:
    assert registry.field == field and known in registry
    with pytest.raises(ConfigError) as caught:
        registry.get("nope")
    assert str(caught.value) == f"{field}='nope': unknown {registry.family}; known: {', '.join(registry.names())}"


def test_the_config_paths_raise_the_registry_error() -> None:
    from router._config import EncoderConfig
    from router.dispatch._config import TraceConfig
    from router.dispatch._trace import build_sink
    from router.encoders import build_encoder, encoder_identity
    from router.vectors import choose_kind, new_index

    for call in (lambda: build_encoder(EncoderConfig(backend="nope")),
                 lambda: encoder_identity(EncoderConfig(backend="nope"))):
        with pytest.raises(ConfigError, match=r"encoder\.backend='nope'.*known: hashing, onnx, st"):
            call()
    with pytest.raises(ConfigError, match=r"vector_index\.kind='annoy'.*known: flat, hnsw, numpy"):
        choose_kind("annoy", 10, 4096)
    with pytest.raises(ConfigError, match=r"vector_index\.kind='annoy'"):
        new_index("annoy", 8, {})
    with pytest.raises(ConfigError, match=r"trace\.sink='kafka'.*known: jsonl, memory"):
        build_sink(TraceConfig(sink="kafka"))
