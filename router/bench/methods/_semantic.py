"""(c) aurelio-labs semantic-router (PyPI ``semantic-router``, 1.x): one route per intent, our encoder.

Default: an ``IndexedRouter`` as constructed, whose best route always wins. Fitted: its own
``fit`` (Platt calibration) on the validation split, then ``confidence_threshold = 0.5``, the
setting its README gives for "act only when it is more likely right than wrong". BANKING77 has
no validation split, so the fitted variant holds out a stratified 10% of the training rows to
fit on and builds its routes from the rest.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from router._intents import OOS, Labelled
from router.bench._data import holdout
from router.bench.methods._base import MethodContext, Outcome
from router.encoders import Encoder, build_encoder
from router.errors import MissingDependency

_INSTALL_HINT = "the semantic-router comparison needs the [bench] extra: pip install 'tiered-router[bench]'"


@cache
def _encoder_class() -> type:
    try:
        from semantic_router.encoders import DenseEncoder
    except ImportError as exc:
        raise MissingDependency(_INSTALL_HINT) from exc
    from pydantic import PrivateAttr

    class RouterEncoder(DenseEncoder):
        """semantic-router's encoder interface over our ONNX MiniLM, so both routers see the same vectors."""

        name: str = "minilm-onnx"
        _encoder: Any = PrivateAttr()

        def __init__(self, encoder: Encoder, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._encoder = encoder

        def __call__(self, docs: list[Any]) -> list[list[float]]:
            vectors: list[list[float]] = self._encoder.encode([str(d) for d in docs]).tolist()
            return vectors

    return RouterEncoder


def _routes(train: Labelled) -> list[Any]:
    from semantic_router import Route

    grouped: dict[str, list[str]] = {}
    for text, label in zip(train.texts, train.labels, strict=True):
        if label != OOS:
            grouped.setdefault(label, []).append(text)
    return [Route(name=name, utterances=texts) for name, texts in sorted(grouped.items())]


class SemanticRouter:
    FIT_THRESHOLD = 0.5

    def __init__(self, ctx: MethodContext, sample: int | None, fitted: bool) -> None:
        self.ctx = ctx
        self.sample = sample
        self.fitted = fitted
        self.name = "semantic-router, fitted" if fitted else "semantic-router, default"
        self.notes: list[str] = []
        self.router: Any = None

    def build(self) -> float:
        from semantic_router import IndexedRouter, __version__

        encoder = _encoder_class()(build_encoder(self.ctx.encoder))
        train, fit_on = self.ctx.data.train, self.ctx.data.val
        if self.fitted and fit_on is None:
            train, fit_on = holdout(train, 0.1)
            self.notes.append("no validation split: fitted on a stratified 10% of train, routes from the rest")
        started = time.perf_counter()
        self.router = IndexedRouter(encoder=encoder, routes=_routes(train))
        if self.fitted:
            assert fit_on is not None
            try:
                report = self.router.fit(fit_on.texts, [None if lab == OOS else lab for lab in fit_on.labels])
            except ValueError as exc:  # e.g. every fitting query right: nothing to calibrate against
                self.notes.append(f"its fit refused this data ({exc}), so it stays at its defaults")
            else:
                self.router.confidence_threshold = self.FIT_THRESHOLD
                self.notes.append(f"fit: {report.method} on {report.n} queries, confidence_threshold "
                                  f"{self.FIT_THRESHOLD}")
        seconds = time.perf_counter() - started
        self.notes.append(f"semantic-router {__version__}, IndexedRouter defaults (LocalIndex, top_k 5, mean)")
        return seconds

    def classify(self, text: str) -> Outcome:
        # The best route and its confidence in one call; accepting it is the test the router's own
        # threshold makes (no route here has a threshold of its own).
        choice = self.router(text, limit=1, threshold=float("-inf"))
        bar = self.router.confidence_threshold
        confidence = float(choice.confidence or 0.0)
        accepted = choice.name is not None and (bar is None or confidence >= bar)
        return Outcome(choice.name, accepted, confidence, "semantic-router")

    def close(self) -> None:
        self.router = None


def default(ctx: MethodContext, sample: int | None) -> SemanticRouter:
    return SemanticRouter(ctx, sample, fitted=False)


def fitted(ctx: MethodContext, sample: int | None) -> SemanticRouter:
    return SemanticRouter(ctx, sample, fitted=True)
