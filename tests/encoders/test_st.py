import numpy as np
import pytest

from router import EncoderConfig
from router.encoders import build_encoder

pytestmark = pytest.mark.st


def test_sentence_transformers_backend_matches_onnx_fp32() -> None:
    pytest.importorskip("sentence_transformers")
    texts = ["what is my bank balance", "set an alarm for 7am"]
    st = build_encoder(EncoderConfig(backend="st", model="minilm-l6-fp32", cache_size=0))
    onnx = build_encoder(EncoderConfig(backend="onnx", model="minilm-l6-fp32", cache_size=0))
    assert st.encoder_id == onnx.encoder_id
    assert np.abs(st.encode(texts) - onnx.encode(texts)).max() < 1e-4
