"""all-MiniLM-L6-v2 (or any BERT-family encoder) on ONNX Runtime with the ``tokenizers`` library."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router._model_store import ModelManifest, resolve
from router._paths import cache_dir
from router.encoders._base import mean_pool
from router.encoders._export import EXPORTER_VERSION, export_bert_onnx
from router.errors import ModelError


def onnx_model_path(manifest: ModelManifest, directory: str | Path | None = None, export: bool = True) -> Path:
    """The ONNX file for ``manifest``: shipped as is, or exported once from safetensors into the model cache."""
    weights = resolve(manifest.weights)
    if manifest.export_config is None:
        return weights
    cached = cache_dir(directory) / (
        f"{manifest.name}-{manifest.weights.sha256[:12]}-x{EXPORTER_VERSION}.onnx"
    )
    if not cached.is_file():
        if not export:
            raise ModelError(f"{cached} is missing; run: router models export {manifest.name}")
        config = json.loads(resolve(manifest.export_config).read_text())
        export_bert_onnx(weights, config, cached)
    return cached


class OnnxEncoder:
    """Tokenise with ``tokenizers``, run the graph with ONNX Runtime, mean-pool and normalise."""

    def __init__(
        self,
        manifest: ModelManifest,
        model_path: Path,
        tokenizer_path: Path,
        threads: int = 1,
        batch_size: int = 64,
        encoder_id: str | None = None,
    ) -> None:
        """``encoder_id`` names a graph that is not the manifest's own weights (a fine-tuned one)."""
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - both are core dependencies
            raise ModelError(f"the onnx encoder needs onnxruntime and tokenizers: {exc}") from exc
        self._manifest = manifest
        self._encoder_id = encoder_id or manifest.encoder_id
        self.batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=manifest.max_length)
        self._tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning worker threads burn the other core between requests; we favour a quiet machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"ONNX Runtime could not load {model_path}: {exc}") from exc
        self._inputs = {i.name for i in self._session.get_inputs()}

    @property
    def encoder_id(self) -> str:
        return self._encoder_id

    @property
    def dimension(self) -> int:
        return self._manifest.dimension

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size())

    @property
    def special_ids(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a text (``[CLS]`` and ``[SEP]`` for BERT)."""
        ids = self._tokenizer.encode("").ids
        return list(ids[:1]), list(ids[1:])

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text, special tokens included, truncated to the model's max length."""
        encodings = (
            [self._tokenizer.encode(texts[0])] if len(texts) == 1 else self._tokenizer.encode_batch(list(texts))
        )
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def _feed(self, ids: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Token ids, attention mask and type ids, padded to the longest text of the batch."""
        width = max(len(row) for row in ids)
        padded = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros_like(padded)
        for n, row in enumerate(ids):
            padded[n, : len(row)] = row
            mask[n, : len(row)] = 1
        feed = {"input_ids": padded, "attention_mask": mask, "token_type_ids": np.zeros_like(padded)}
        return {k: v for k, v in feed.items() if k in self._inputs}

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The model's input feed for ``texts``."""
        return self._feed(self.token_ids(texts))

    def forward(self, feed: dict[str, np.ndarray], normalize: bool = True) -> np.ndarray:
        """The transformer pass plus pooling: the encoder's floor cost."""
        hidden = self._session.run(None, feed)[0]
        return mean_pool(hidden, feed["attention_mask"], normalize)

    def encode_ids(self, ids: Sequence[np.ndarray], normalize: bool = True) -> np.ndarray:
        """Vectors of already tokenised texts (the static tier tokenises once for both tiers)."""
        if len(ids) <= self.batch_size:
            return self.forward(self._feed(ids), normalize) if len(ids) else np.zeros((0, self.dimension), np.float32)
        # Sort by length so each batch pads to similar widths; restore order at the end.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = self.forward(self._feed([ids[i] for i in chunk]), normalize)
        return out

    def encode_with_ids(self, texts: Sequence[str], ids: Sequence[np.ndarray]) -> np.ndarray:
        return self.encode_ids(ids)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_ids(self.token_ids(texts)) if texts else np.zeros((0, self.dimension), np.float32)


def build_onnx_encoder(manifest: ModelManifest, options: dict[str, Any]) -> OnnxEncoder:
    model_path = onnx_model_path(manifest, options.get("models_dir"))
    threads = int(options.get("threads") or os.cpu_count() or 1)
    return OnnxEncoder(
        manifest,
        model_path,
        resolve(manifest.tokenizer),
        threads=threads,
        batch_size=int(options.get("batch_size", 64)),
    )
