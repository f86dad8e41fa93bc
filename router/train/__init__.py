"""Fine-tuning the encoder on the intents (``router build --finetune``, the ``[train]`` extra).

``tune_encoder`` trains (router/train/_loop.py, torch), keeps the best epoch's weights as
safetensors in the model cache, exports them to ONNX with the torch-free exporter and returns an
encoder on that graph, built as serving builds it (``router.encoders.build_tuned_encoder``): the
rest of the build (vectors, static table, thresholds) and serving use it like any other encoder,
and serving needs no torch. Importing this package does not import torch.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router._config import RouterConfig
from router._intents import IntentSet, Labelled, training_pairs
from router._model_store import ModelManifest, file_sha256, load_manifest, resolve
from router._paths import cache_dir
from router._progress import Progress
from router.encoders import Encoder, build_tuned_encoder
from router.encoders._export import EXPORTER_VERSION, export_bert_onnx
from router.errors import ConfigError, StaleIndexError
from router.train._data import TrainingSet, training_set
from router.train._record import TUNED_ONNX, FinetuneRecord, finetune_key, tuned_encoder_id

# The fp32 weights of the default int8 encoder: what a fine-tune starts from unless told otherwise.
DEFAULT_BASE = "minilm-l6-fp32"


@dataclass
class Tuned:
    encoder: Encoder  # the tuned graph on onnxruntime (router.encoders._onnx.OnnxEncoder, uncached)
    onnx: Path  # the exported graph, copied into the index as ``record.onnx_file``
    head_weights: np.ndarray
    head_bias: np.ndarray
    data: TrainingSet
    record: FinetuneRecord


def base_manifest(config: RouterConfig) -> ModelManifest:
    """The manifest whose safetensors weights are tuned: ``finetune.base``, else the encoder's model when
    it has such weights, else minilm-l6-fp32."""
    ft = config.finetune
    assert ft is not None
    enc = config.encoder
    if enc.backend != "onnx":
        raise ConfigError(f"finetune needs encoder.backend 'onnx' (the tuned encoder is served as ONNX); "
                          f"got encoder.backend={enc.backend!r}")
    if ft.base is not None:
        manifest = load_manifest(ft.base, enc.models_dir)
        if manifest.export_config is None:
            raise ConfigError(f"finetune.base={ft.base!r} has no safetensors weights to train (its manifest has "
                              f"no export_config); use {DEFAULT_BASE!r}")
        return manifest
    configured = load_manifest(enc.model, enc.models_dir)
    return configured if configured.export_config is not None else load_manifest(DEFAULT_BASE, enc.models_dir)


def _run_key(base: ModelManifest, config: RouterConfig, data: TrainingSet) -> str:
    assert config.finetune is not None
    # Threads are in the key: the float sums of 1 and 2 threads differ, and so do the weights.
    key = {"base": base.weights.sha256, "tokenizer": base.tokenizer.sha256, "finetune": finetune_key(config.finetune),
           "data": data.digest(), "threads": config.finetune.threads or _cores(), "trainer": 2,
           "exporter": EXPORTER_VERSION}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def tune_encoder(config: RouterConfig, pairs: Labelled, names: list[str], validation: Labelled | None,
                 configured_encoder_id: str, progress: Progress) -> Tuned:
    """Fine-tune on ``pairs`` (held out: ``validation``, or a stratified slice of ``pairs``)."""
    from router.train._loop import Trainer, import_torch

    ft = config.finetune
    assert ft is not None
    import_torch()  # the install hint before any other work
    started = time.perf_counter()
    base = base_manifest(config)
    data = training_set(pairs, names, validation, ft)
    weights, bert_config = resolve(base.weights), json.loads(resolve(base.export_config).read_text())  # type: ignore[arg-type]
    workdir = cache_dir(config.encoder.models_dir) / "finetune" / _run_key(base, config, data)[:24]
    run = Trainer(data, weights, bert_config, resolve(base.tokenizer), ft, workdir, progress).run()
    tuned_sha = file_sha256(run.weights)
    onnx = workdir / TUNED_ONNX
    if not onnx.is_file():
        with progress.stage("export tuned encoder"):
            export_bert_onnx(run.weights, bert_config, onnx)
    encoder_id = tuned_encoder_id(base.name, tuned_sha)
    # As the Builder encodes: no query cache, one thread per core unless build_threads says otherwise.
    enc = config.encoder.model_copy(update={"cache_size": 0, "threads": config.encoder.build_threads or _cores()})
    encoder = build_tuned_encoder(enc, onnx, base.name, encoder_id, base.tokenizer.sha256)
    record = FinetuneRecord(
        base_model=base.name, base_encoder_id=base.encoder_id, base_weights_sha256=base.weights.sha256,
        tokenizer_sha256=base.tokenizer.sha256,
        configured_encoder_id=configured_encoder_id, tuned_weights_sha256=tuned_sha, config=ft,
        data_sha256=data.digest(), heldout="slice" if data.held_out_slice else "validation",
        n_train=len(data.train), n_heldout=len(data.heldout), best_epoch=run.best_epoch,
        heldout_accuracy=[round(a, 5) for a in run.heldout_accuracy], epoch_seconds=run.epoch_seconds,
        loss=[round(x, 5) for x in run.loss], seconds=round(time.perf_counter() - started, 2), cached=run.cached)
    return Tuned(encoder, onnx, run.head_weights, run.head_bias, data, record)


def check_tuned(record: FinetuneRecord | None, config: RouterConfig, intents: IntentSet,
                validation: Labelled | None, folder: Path) -> None:
    """Refuse an index whose fine-tuning differs from what ``config`` asks for: tuned or not, the
    settings that change the weights, the base weights, and the training and held-out data."""
    rebuild = f"rebuild it with: router build --config <your config> (index {config.name})"
    wanted = config.finetune
    if record is None:
        if wanted is not None:
            raise StaleIndexError(f"index {folder} was built without fine-tuning, but the config has a finetune "
                                  f"section; {rebuild}")
        return
    if wanted is None:
        tuned = tuned_encoder_id(record.base_model, record.tuned_weights_sha256)
        raise StaleIndexError(f"index {folder} was fine-tuned (encoder {tuned!r}), but the config has no finetune "
                              f"section; {rebuild}")
    built, asked = finetune_key(record.config), finetune_key(wanted)
    changed = {k: (built.get(k), asked[k]) for k in asked if built.get(k) != asked[k]}
    if changed:
        shown = ", ".join(f"{k}: built {b!r}, config {a!r}" for k, (b, a) in sorted(changed.items()))
        raise StaleIndexError(f"index {folder} was fine-tuned with other settings ({shown}); {rebuild}")
    base = base_manifest(config)
    if (base.name, base.weights.sha256) != (record.base_model, record.base_weights_sha256):
        raise StaleIndexError(f"index {folder} was fine-tuned from {record.base_encoder_id!r}, the config's base "
                              f"is {base.encoder_id!r}; {rebuild}")
    names = [i.name for i in intents.intents if i.examples]
    digest = training_set(training_pairs(intents), names, validation, wanted).digest()
    if digest != record.data_sha256:
        raise StaleIndexError(f"index {folder} was fine-tuned on other data (training and held-out hash "
                              f"{record.data_sha256[:12]}, now {digest[:12]}); {rebuild}")


def _cores() -> int:
    import os

    return os.cpu_count() or 1


__all__ = ["DEFAULT_BASE", "Tuned", "base_manifest", "check_tuned", "tune_encoder"]
