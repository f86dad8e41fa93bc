"""all-MiniLM-L6-v2 (or any BERT-family encoder) on ONNX Runtime with the ``tokenizers`` library."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.encoders.base import mean_pool
from router.encoders.export import EXPORTER_VERSION, export_bert_onnx
from router.errors import ModelError
from router.model_store import ModelManifest, resolve
from router.paths import models_dir


def onnx_model_path(manifest: ModelManifest, directory: str | Path | None = None, export: bool = True) -> Path:
    """The ONNX file for ``manifest``: shipped as is, or exported once from safetensors into models/cache/."""
    weights = resolve(manifest.weights)
    if manifest.export_config is None:
        return weights
    cached = models_dir(directory) / "cache" / (
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
    ) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - both are core dependencies
            raise ModelError(f"the onnx encoder needs onnxruntime and tokenizers: {exc}") from exc
        self._manifest = manifest
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
        return self._manifest.encoder_id

    @property
    def dimension(self) -> int:
        return self._manifest.dimension

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Token ids, attention mask and type ids, padded to the longest text of the batch."""
        encodings = (
            [self._tokenizer.encode(texts[0])] if len(texts) == 1 else self._tokenizer.encode_batch(list(texts))
        )
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {k: v for k, v in feed.items() if k in self._inputs}

    def forward(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """The transformer pass plus pooling: the encoder's floor cost."""
        hidden = self._session.run(None, feed)[0]
        return mean_pool(hidden, feed["attention_mask"])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) <= self.batch_size:
            return self.forward(self.tokenize(texts)) if texts else np.zeros((0, self.dimension), np.float32)
        # Sort by length so each batch pads to similar widths; restore order at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = self.forward(self.tokenize([texts[i] for i in chunk]))
        return out


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
