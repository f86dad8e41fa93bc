"""What a fine-tuned index records about its encoder, and the stale check on it (no torch needed)."""

from __future__ import annotations

from typing import Literal

from router._config import FinetuneConfig
from router._strict import Strict

# The tuned encoder's ONNX graph, inside the index folder: serving needs nothing else (no torch).
TUNED_ONNX = "encoder.onnx"


class FinetuneRecord(Strict):
    base_model: str  # the manifest the weights came from (e.g. minilm-l6-fp32)
    base_encoder_id: str  # its name and weights hash
    base_weights_sha256: str
    tokenizer_sha256: str  # the base's tokenizer: serving tokenises with it, so it must not change
    configured_encoder_id: str  # the config's encoder at build time: the one a load must be given
    tuned_weights_sha256: str  # the best epoch's safetensors (kept in the model cache)
    onnx_file: str = TUNED_ONNX
    config: FinetuneConfig
    data_sha256: str  # the training and held-out texts and labels (router.train._data.TrainingSet.digest)
    heldout: Literal["validation", "slice"]  # the validation split, or a stratified slice of the examples
    n_train: int
    n_heldout: int
    best_epoch: int  # 1-based: the epoch whose weights are served
    heldout_accuracy: list[float]  # per epoch run
    epoch_seconds: list[float]
    loss: list[float]
    seconds: float  # training and export, this build's wall time
    cached: bool  # a finished run with the same base, config and data was reused


def tuned_encoder_id(base_model: str, tuned_sha256: str) -> str:
    return f"{base_model}+ft@{tuned_sha256[:16]}"


def finetune_key(config: FinetuneConfig) -> dict[str, object]:
    """The settings that change the weights (threads do not)."""
    return config.model_dump(exclude={"threads"})
