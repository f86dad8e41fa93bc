"""``learning:``: what the router learns from, how fast, and where it keeps what it learned."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from router._strict import Strict


class LearningConfig(Strict):
    """Learning from escalations (router/learn/). Explicit feedback (``Router.learn``, ``POST /v1/feedback``)
    is taken whenever ``feedback`` is on; ``mode`` says what happens to tier 2's own answers."""

    mode: Literal["off", "review", "auto"] = Field(
        "off", description="tier 2's answers: off (not learned), review (queued for a person: GET /v1/review), "
                           "auto (learned when confidence >= min_llm_confidence)")
    feedback: bool = Field(True, description="take explicit feedback (router.learn, POST /v1/feedback)")
    min_llm_confidence: float = Field(0.9, ge=0.0, le=1.0, description="a tier-2 answer is learned or queued "
                                      "only at this confidence or above")
    max_per_minute: int = Field(600, ge=1, le=1_000_000, description="feedback items taken per source "
                                "(human, llm) in any 60 s; more get 429")
    reservoir_share: float = Field(0.2, ge=0.0, lt=1.0, description="share of feedback kept held out (by a hash "
                                   "of its text): never trained on, used to re-check precision after learning")
    min_check: int = Field(20, ge=1, description="accepted held-out answers needed before a precision check "
                           "can refuse a swap")
    log: str | None = Field(None, description="the append-only log of learned examples (JSON lines); None: "
                            "<index folder>.learned.jsonl, beside the index")
    apply_delay_s: float = Field(0.5, ge=0.0, le=60.0, description="the service waits this long after a "
                                 "feedback item for more, then learns them in one refit")
    refit_epochs: int = Field(30, ge=1, le=10_000, description="epochs of the warm-started head refit")
    refit_lr: float = Field(0.01, gt=0.0, le=1.0, description="learning rate of that refit")
    learned_weight: float = Field(3.0, gt=0.0, le=1000.0, description="weight of a learned example in the "
                                  "refit, against 1 for a built one")
    max_learned: int = Field(10_000, ge=1, le=1_000_000, description="learned examples one index takes before "
                             "`router build --compact` must fold them in (each query scans them exactly: "
                             "~2 ms at 10,000 on one core)")
    max_pending_review: int = Field(10_000, ge=1, description="tier-2 answers waiting for review; the oldest "
                                    "is dropped past it")
