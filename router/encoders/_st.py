"""sentence-transformers backend (the ``[st]`` extra): same Protocol, torch underneath."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from router._model_store import ModelManifest, resolve
from router.errors import ConfigError, ModelError


class SentenceTransformerEncoder:
    def __init__(self, manifest: ModelManifest, threads: int = 1, batch_size: int = 64) -> None:
        if manifest.export_config is None:
            raise ConfigError(
                f"encoder.model={manifest.name!r} is an ONNX file; the st backend needs safetensors weights "
                "(use model minilm-l6-fp32)"
            )
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelError(
                "encoder.backend='st' needs sentence-transformers: pip install 'tiered-router[st]'"
            ) from exc
        torch.set_num_threads(threads)
        folder = resolve(manifest.weights).parent
        self._manifest = manifest
        self.encoder_id = manifest.encoder_id
        self.dimension = manifest.dimension
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(folder), device="cpu")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
