"""Encoder backends behind the ``Encoder`` Protocol, in ``ENCODERS``, a ``Registry`` keyed by ``encoder.backend``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from router._config import EncoderConfig
from router._model_store import load_manifest
from router._registry import Registry
from router.encoders._base import Encoder, TokenEncoder
from router.encoders._cache import CachedEncoder
from router.errors import ConfigError


@dataclass(frozen=True)
class EncoderBackend:
    build: Callable[[EncoderConfig], Encoder]
    # The identity an index built with this config records, known without loading the model.
    identity: Callable[[EncoderConfig], str]


def _onnx(config: EncoderConfig) -> Encoder:
    from router.encoders._onnx import build_onnx_encoder

    options = {"threads": config.threads, "batch_size": config.batch_size, "models_dir": config.models_dir}
    return build_onnx_encoder(load_manifest(config.model, config.models_dir), options)


def _st(config: EncoderConfig) -> Encoder:
    from router.encoders._st import SentenceTransformerEncoder

    return SentenceTransformerEncoder(load_manifest(config.model, config.models_dir), config.threads, config.batch_size)


def _hashing(config: EncoderConfig) -> Encoder:
    from router.encoders._hashing import HashingEncoder

    return HashingEncoder()


def _manifest_identity(config: EncoderConfig) -> str:
    return load_manifest(config.model, config.models_dir).encoder_id


def _hashing_identity(config: EncoderConfig) -> str:
    return "hashing-384"


ENCODERS: Registry[EncoderBackend] = Registry("encoder backend", "encoder.backend", {
    "onnx": EncoderBackend(_onnx, _manifest_identity),
    "st": EncoderBackend(_st, _manifest_identity),
    "hashing": EncoderBackend(_hashing, _hashing_identity),
})


def _backend(config: EncoderConfig) -> EncoderBackend:
    return ENCODERS.get(config.backend)


def _cached(encoder: Encoder, config: EncoderConfig) -> Encoder:
    return CachedEncoder(encoder, config.cache_size) if config.cache_size else encoder


def build_encoder(config: EncoderConfig) -> Encoder:
    return _cached(_backend(config).build(config), config)


def build_tuned_encoder(config: EncoderConfig, graph: Path, base_model: str, encoder_id: str,
                        tokenizer_sha256: str) -> Encoder:
    """A fine-tuned encoder served from ``graph`` (an index's ONNX file) with ``base_model``'s tokenizer,
    which must be the one it was trained with; ``config`` gives the serving settings (threads, batch,
    cache). onnxruntime only: no torch."""
    if config.backend != "onnx":
        raise ConfigError(f"a fine-tuned index is served by encoder.backend 'onnx'; got {config.backend!r}")
    from router._model_store import resolve
    from router.encoders._onnx import OnnxEncoder
    from router.errors import StaleIndexError

    manifest = load_manifest(base_model, config.models_dir)
    if manifest.tokenizer.sha256 != tokenizer_sha256:
        raise StaleIndexError(f"{graph} was tuned with tokenizer sha256 {tokenizer_sha256[:16]}, but model "
                              f"{base_model!r} now names tokenizer {manifest.tokenizer.sha256[:16]}; rebuild the index")
    return _cached(OnnxEncoder(manifest, graph, resolve(manifest.tokenizer), threads=config.threads,
                               batch_size=config.batch_size, encoder_id=encoder_id), config)


def token_encoder(encoder: Encoder) -> TokenEncoder | None:
    """The tokenizer-exposing encoder behind ``encoder`` (through its cache), or None."""
    inner = encoder.inner if isinstance(encoder, CachedEncoder) else encoder
    return inner if isinstance(inner, TokenEncoder) else None


def encoder_identity(config: EncoderConfig) -> str:
    return _backend(config).identity(config)


__all__ = ["ENCODERS", "CachedEncoder", "Encoder", "EncoderBackend", "TokenEncoder", "build_encoder",
           "build_tuned_encoder", "encoder_identity", "token_encoder"]
