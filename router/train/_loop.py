"""The fine-tuning loop (torch, the ``[train]`` extra): MiniLM plus a head, trained on the intents.

Mean pooling and L2 normalisation, as served; a normalised-softmax (cosine) or plain softmax head;
AdamW with a one-cycle schedule, separate learning rates for the encoder and the head. Every epoch
ends with a checkpoint (written whole, then renamed) and the held-out accuracy; an interrupted
run resumes from its last checkpoint, and a finished one is reused by the next build with the same
base weights, config and data (the run's folder is keyed by their hash).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router._config import FinetuneConfig
from router._progress import Progress
from router.encoders._export import read_safetensors
from router.errors import ConfigError, MissingDependency, ModelError
from router.train._data import TrainingSet, batches, pad

INSTALL = "pip install 'tiered-router[train]'"
EVAL_BATCH = 128


def import_torch() -> Any:
    try:
        import onnx  # noqa: F401  # the export after training: missing it must not cost a whole run
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(f"router build --finetune needs torch and transformers ({exc.name} is missing): "
                                f"{INSTALL}") from exc
    return torch


@dataclass
class TunedWeights:
    """What a run produced: the best epoch's encoder weights and head, and how the run went."""

    weights: Path  # safetensors of the encoder (BertModel keys), the best epoch's
    # (dimension, n_intents [+ 1]): the served head's matrix (cosine: scaled unit rows); the last column is
    # the out-of-scope class when ``finetune.oos`` is ``class`` (router.head.LinearHead.reject)
    head_weights: np.ndarray
    head_bias: np.ndarray  # (n_intents [+ 1],)
    best_epoch: int
    heldout_accuracy: list[float]  # per epoch run
    epoch_seconds: list[float]
    loss: list[float]  # mean training loss per epoch
    cached: bool = False  # reused a finished run's weights: nothing was trained
    extra: dict[str, Any] = field(default_factory=dict)


def _ids(tokenizer_file: Path, texts: list[str], max_length: int) -> list[np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()
    return [np.asarray(e.ids, dtype=np.int64) for e in tok.encode_batch(texts)]


def _bert(torch: Any, weights: Path, bert_config: dict[str, Any]) -> Any:
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(**bert_config), add_pooling_layer=False)
    state = {k.removeprefix("bert."): torch.from_numpy(v) for k, v in read_safetensors(weights).items()
             if not k.removeprefix("bert.").startswith("pooler.") and not k.endswith("position_ids")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelError(f"{weights} is not a BERT encoder this trainer can tune: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model


class Trainer:
    """One fine-tuning run in ``workdir`` (its checkpoints), on ``data``."""

    def __init__(self, data: TrainingSet, base_weights: Path, bert_config: dict[str, Any], tokenizer: Path,
                 config: FinetuneConfig, workdir: Path, progress: Progress) -> None:
        self.torch = import_torch()
        self.data, self.config, self.workdir, self.progress = data, config, workdir, progress
        self.base_weights, self.bert_config, self.tokenizer = base_weights, bert_config, tokenizer

    def _tokenize(self) -> None:
        """Token ids of the training rows and the in-scope held-out queries (only when training)."""
        data, config = self.data, self.config
        n_in = len(data.names)
        classes = data.classes(data.train)
        keep = classes < n_in if config.oos == "ignore" else np.ones(len(classes), dtype=bool)
        self.classes = classes[keep]
        self.ids = _ids(self.tokenizer, [t for t, k in zip(data.train.texts, keep, strict=True) if k],
                        config.max_length)
        self.lengths = np.array([len(i) for i in self.ids])
        held = data.classes(data.heldout)
        rows = np.flatnonzero(held < n_in)  # early stopping looks at the in-scope held-out queries
        self.held_ids = _ids(self.tokenizer, [data.heldout.texts[i] for i in rows], config.max_length)
        self.held_classes = held[rows]
        self.n_out = n_in + (1 if config.oos == "class" and (self.classes == n_in).any() else 0)

    # -- the model --------------------------------------------------------------------------------
    def _setup(self) -> None:
        torch, c = self.torch, self.config
        torch.manual_seed(c.seed)
        self.model = _bert(torch, self.base_weights, self.bert_config)
        if c.freeze_embeddings:
            self.model.embeddings.word_embeddings.weight.requires_grad_(False)
        layers = self.model.encoder.layer
        if c.freeze_layers > len(layers):
            raise ConfigError(f"finetune.freeze_layers={c.freeze_layers}, but the base has {len(layers)} layers")
        if c.freeze_layers:  # no gradient reaches below the first trained layer
            for p in list(self.model.embeddings.parameters()) + list(layers[: c.freeze_layers].parameters()):
                p.requires_grad_(False)
        dim = int(self.bert_config["hidden_size"])
        self.head = torch.nn.Parameter(torch.randn(self.n_out, dim) * 0.02)
        self.bias = torch.nn.Parameter(torch.zeros(self.n_out))
        head_params = [self.head] + ([self.bias] if c.loss == "linear" else [])
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW([{"params": trained, "lr": c.lr},
                                            {"params": head_params, "lr": c.head_lr}], weight_decay=0.01)
        steps = c.epochs * len(batches(self.lengths, c.batch_size, np.random.default_rng(0)))
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=[c.lr, c.head_lr],
                                                             total_steps=steps, pct_start=0.1)

    def _embed(self, ids: np.ndarray, mask: np.ndarray) -> Any:
        torch = self.torch
        m = torch.from_numpy(mask)
        hidden = self.model(input_ids=torch.from_numpy(ids), attention_mask=m).last_hidden_state
        mf = m.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mf).sum(1) / mf.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def _logits(self, emb: Any) -> Any:
        if self.config.loss == "cosine":
            return self.config.scale * emb @ self.torch.nn.functional.normalize(self.head, dim=-1).T
        return emb @ self.head.T + self.bias

    def _loss(self, logits: Any, target: Any) -> Any:
        torch, n_in = self.torch, len(self.data.names)
        if self.config.oos != "negatives":
            return torch.nn.functional.cross_entropy(logits, target)
        logp = torch.log_softmax(logits[:, :n_in], dim=-1)
        neg = target == n_in  # out of scope: cross-entropy against the flat distribution
        per_row = torch.where(neg, -logp.mean(-1), -logp.gather(1, target.clamp(max=n_in - 1)[:, None])[:, 0])
        return per_row.mean()

    # -- one epoch ----------------------------------------------------------------------------------
    def _epoch(self, epoch: int) -> float:
        torch, c = self.torch, self.config
        self.model.train()
        plan = batches(self.lengths, c.batch_size, np.random.default_rng([c.seed, epoch]))
        total, seen = 0.0, 0
        with self.progress.stage(f"fine-tune epoch {epoch + 1}/{c.epochs}", total=len(plan), unit="batch") as bar:
            for rows in plan:
                ids, mask = pad(self.ids, rows)
                loss = self._loss(self._logits(self._embed(ids, mask)), torch.from_numpy(self.classes[rows]))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], 1.0)
                self.optimizer.step()
                self.scheduler.step()
                total += float(loss.detach()) * len(rows)
                seen += len(rows)
                bar.note(f"loss {total / seen:.3f}")
                bar.update()
        return total / max(seen, 1)

    def _accuracy(self) -> float:
        if not len(self.held_ids):
            return float("nan")
        torch, n_in = self.torch, len(self.data.names)
        self.model.eval()
        order = np.argsort([len(i) for i in self.held_ids], kind="stable")
        right = 0
        with torch.no_grad():
            for start in range(0, len(order), EVAL_BATCH):
                rows = order[start : start + EVAL_BATCH]
                guess = self._logits(self._embed(*pad(self.held_ids, rows)))[:, :n_in].argmax(-1).numpy()
                right += int((guess == self.held_classes[rows]).sum())
        return right / len(self.held_ids)

    # -- checkpoints --------------------------------------------------------------------------------
    def _save(self, path: Path, state: dict[str, Any]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        self.torch.save(state, tmp)
        os.replace(tmp, path)  # a checkpoint is whole or absent

    def _state(self, history: dict[str, list[float]], best: int) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "head": self.head.detach().clone(),
                "bias": self.bias.detach().clone(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "torch_rng": self.torch.get_rng_state(),
                "history": history, "best": best}

    def _resume(self) -> tuple[int, dict[str, list[float]], int]:
        done = sorted(int(p.stem.split("-")[1]) for p in self.workdir.glob("epoch-*.pt"))
        if not done:
            return 0, {"accuracy": [], "seconds": [], "loss": []}, -1
        state = self.torch.load(self.workdir / f"epoch-{done[-1]}.pt", weights_only=False)
        self.model.load_state_dict(state["model"])
        with self.torch.no_grad():
            self.head.copy_(state["head"])
            self.bias.copy_(state["bias"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.torch.set_rng_state(state["torch_rng"])
        self.progress.line(f"fine-tune: resuming after epoch {done[-1]} from {self.workdir}")
        return done[-1], state["history"], int(state["best"])

    def _restore_best(self, best: int) -> None:
        """Rewrite best.* from the best epoch's checkpoint (a crash came between the two writes)."""
        path = self.workdir / f"epoch-{best + 1}.pt"
        current = {"model": {k: v.clone() for k, v in self.model.state_dict().items()},
                   "head": self.head.detach().clone(), "bias": self.bias.detach().clone()}
        state = self.torch.load(path, weights_only=False)
        self.model.load_state_dict(state["model"])
        with self.torch.no_grad():
            self.head.copy_(state["head"])
            self.bias.copy_(state["bias"])
        self._keep_best()
        self.model.load_state_dict(current["model"])
        with self.torch.no_grad():
            self.head.copy_(current["head"])
            self.bias.copy_(current["bias"])

    def _keep_best(self) -> None:
        from safetensors.torch import save_file

        tmp = self.workdir / "best.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(tmp))
        os.replace(tmp, self.workdir / "best.safetensors")
        weights, bias = self._served_head()
        with open(self.workdir / "best-head.npz.tmp", "wb") as fh:
            np.savez(fh, weights=weights, bias=bias)
        os.replace(self.workdir / "best-head.npz.tmp", self.workdir / "best-head.npz")

    def _served_head(self) -> tuple[np.ndarray, np.ndarray]:
        """The head as router.head.LinearHead serves it: the intents, then the out-of-scope class when it
        was trained with one (``LinearHead.reject``)."""
        with self.torch.no_grad():
            w = self.head
            if self.config.loss == "cosine":
                w = self.config.scale * self.torch.nn.functional.normalize(w, dim=-1)
                b = self.torch.zeros(self.n_out)
            else:
                b = self.bias
            return (np.ascontiguousarray(w.T.numpy(), dtype=np.float32),
                    np.ascontiguousarray(b.numpy(), dtype=np.float32))

    def run(self) -> TunedWeights:
        finished = self.workdir / "done.json"
        outputs = [finished, self.workdir / "best.safetensors", self.workdir / "best-head.npz"]
        if all(p.is_file() for p in outputs):  # the same base, config and data trained before: reuse it
            return self._outcome(cached=True)
        self.torch.set_num_threads(self.config.threads or os.cpu_count() or 1)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._tokenize()
        self._setup()
        start, history, best = self._resume()
        patience = self.config.early_stopping
        if start and best >= 0:  # best.* may be from another epoch than the checkpoint says (a crash)
            self._restore_best(best)
        stopped = bool(start and patience and start - 1 - best >= patience)
        for epoch in range(start, start if stopped else self.config.epochs):
            t = time.perf_counter()
            history["loss"].append(self._epoch(epoch))
            history["accuracy"].append(self._accuracy())
            history["seconds"].append(round(time.perf_counter() - t, 2))
            acc = history["accuracy"]
            improved = best < 0 or acc[-1] > acc[best]
            best = epoch if improved else best
            # The checkpoint first: a crash before best.* are both rewritten resumes from it and redoes them.
            self._save(self.workdir / f"epoch-{epoch + 1}.pt", self._state(history, best))
            if improved:
                self._keep_best()
            self.progress.line(f"fine-tune epoch {epoch + 1}: loss {history['loss'][-1]:.4f}, held-out accuracy "
                               f"{acc[-1]:.4f}, {history['seconds'][-1]:.0f} s")
            if patience and epoch - best >= patience:
                self.progress.line(f"fine-tune: stopping early, no better held-out accuracy for {patience} epoch(s)")
                break
        for stale in self.workdir.glob("epoch-*.pt"):  # the optimizer state is only for resuming
            stale.unlink()
        tmp = finished.with_name("done.json.tmp")
        tmp.write_text(json.dumps({"best_epoch": best + 1, "accuracy": history["accuracy"],
                                   "seconds": history["seconds"], "loss": history["loss"]}))
        os.replace(tmp, finished)  # last: its presence says every output is whole
        return self._outcome(cached=False)

    def _outcome(self, cached: bool) -> TunedWeights:
        """The finished run, as done.json and the best.* files record it."""
        record = json.loads((self.workdir / "done.json").read_text())
        with np.load(self.workdir / "best-head.npz") as head:
            w, b = np.ascontiguousarray(head["weights"]), np.ascontiguousarray(head["bias"])
        return TunedWeights(self.workdir / "best.safetensors", w, b, record["best_epoch"], record["accuracy"],
                            record["seconds"], record["loss"], cached=cached)
