"""``router eval``: build on a train split, classify the test split one query at a time, report.

Definitions (out-of-scope queries are labelled ``oos``):
- accuracy_full: in-scope test queries whose best guess is right, at full coverage;
- coverage_in_scope: in-scope test queries the router accepted (not escalated, not out of scope);
- accepted_precision: accepted answers that are right, out-of-scope queries accepted counting as wrong;
- oos_recall: out-of-scope test queries not accepted as an intent (null without any);
- tier_share: share of all test queries per outcome (rules, static, embedding, escalated, out_of_scope);
- static_accepted_precision: the static tier's accepted answers that are right (out of scope counts wrong);
- static_oos_leak: out-of-scope test queries the static tier accepted as an intent;
- latency_*_us: whole ``classify`` calls, one query at a time.

With tier 2 configured (``router eval --llm BACKEND``) the report adds the metrics of
``router.llm._gate.tier2_metrics`` (escalation rate, accuracy on the escalated slice with and
without the LLM, end-to-end accuracy with and without it, LLM latency and tokens).

With ``learn_from`` (``router eval --learn-from val``) the report is that of the state after learning from
that stream, with ``before`` and the learning keys: the protocol is ``router.learn._eval``'s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from router._artifact import remove_index
from router._builder import Builder
from router._config import RouterConfig
from router._decision import TIER_RULES, TIER_STATIC, Decision
from router._intents import OOS, Labelled
from router._paths import indexes_dir
from router._progress import Progress, make_progress
from router._router import Router
from router.learn._config import LearningConfig
from router.llm._gate import tier2_metrics


def _best_guess(decision: Decision) -> str | None:
    return decision.candidates[0].intent if decision.candidates else None


def score_decisions(decisions: list[Decision], labels: list[str], known: set[str]) -> dict[str, Any]:
    truth = [lab if lab in known else OOS for lab in labels]
    in_scope = np.array([t != OOS for t in truth])
    accepted = np.array([d.accepted for d in decisions])
    right = np.array([d.intent == t for d, t in zip(decisions, truth, strict=True)])
    guess_right = np.array([_best_guess(d) == t for d, t in zip(decisions, truth, strict=True)])
    n = len(decisions)
    static = np.array([d.accepted and d.tier == TIER_STATIC for d in decisions])
    shares = {
        "rules": sum(d.accepted and d.tier == TIER_RULES for d in decisions) / n,
        "static": float(static.mean()),
        "embedding": sum(d.accepted and d.tier not in (TIER_RULES, TIER_STATIC) for d in decisions) / n,
        "escalated": sum(d.escalate for d in decisions) / n,
        "out_of_scope": sum(d.out_of_scope for d in decisions) / n,
    }
    return {
        "accuracy_full": float(guess_right[in_scope].mean()) if in_scope.any() else None,
        "coverage_in_scope": float(accepted[in_scope].mean()) if in_scope.any() else None,
        "accepted_precision": float(right[accepted].mean()) if accepted.any() else None,
        "oos_recall": float(1 - accepted[~in_scope].mean()) if (~in_scope).any() else None,
        "tier_share": {k: round(v, 4) for k, v in shares.items()},
        # The static tier's own accepted answers: right ones over all it accepted, out of scope counting wrong.
        "static_accepted_precision": float(right[static].mean()) if static.any() else None,
        "static_oos_leak": float(static[~in_scope].mean()) if (~in_scope).any() else None,
        "n_test": n,
        "n_test_oos": int((~in_scope).sum()),
    }


def evaluate(router: Router, test: Labelled, progress: bool | Progress = False) -> dict[str, Any]:
    """``progress``: a bar of the test queries on stderr when it is a terminal (see ``router.progress``)."""
    decisions = []
    latencies = []
    for text in make_progress(progress).iterate(test.texts, "eval", unit="query"):
        start = time.perf_counter_ns()
        decisions.append(router.classify(text))
        latencies.append(time.perf_counter_ns() - start)
    known = set(router.artifact.intents.names)
    report = score_decisions(decisions, test.labels, known)
    if router.escalator is not None:
        report.update(tier2_metrics(decisions, [lab if lab in known else OOS for lab in test.labels]))
        report["llm_backend"] = list(router.escalator.providers)
    lat = np.array(latencies) / 1000.0
    report["latency_p50_us"] = round(float(np.percentile(lat, 50)), 1)
    report["latency_p99_us"] = round(float(np.percentile(lat, 99)), 1)
    return report


def run_eval(config: RouterConfig, test: Labelled, progress: bool | Progress = False,
             index_dir: str | Path | None = None, learn_from: Labelled | None = None,
             learn_feed: Literal["missed", "all"] = "missed") -> dict[str, Any]:
    """Build ``config`` into a scratch index, evaluate it on ``test`` with the query cache off.

    Tier 2 (when ``config.llm`` is set) is measured whatever the build-time gate would say.
    ``progress``: the build's stages and the evaluation's bar (see ``router.progress``).
    ``learn_from``: a labelled stream (the validation split) to learn from between a ``before`` evaluation
    and the one reported (``router.learn._eval.learn_from``); its learning log is a scratch file beside
    the scratch index, deleted with it.
    """
    show = make_progress(progress)
    if config.llm is not None:
        config = config.model_copy(update={"llm": config.llm.model_copy(update={"gate": "on"})})
    root = indexes_dir(index_dir)
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".eval-{config.name}-", dir=root))
    learn_log = folder.with_name(f"{folder.name}.learned.jsonl")
    try:
        report = Builder(config, progress=show).build(folder)
        learning: LearningConfig | Literal["off"] = "off"
        if learn_from is not None:
            from router.learn._eval import scratch_learning

            learning = scratch_learning(config.learning, learn_log)
        router = Router.load(folder, encoder=config.encoder.model_copy(update={"cache_size": 0}), learning=learning)
        try:
            if router.tier2 is not None:
                with show.stage("load the LLM"):
                    router.warm()
            if learn_from is None:
                result = evaluate(router, test, show)
            else:
                from router.learn import _eval

                result = _eval.learn_from(router, learn_from, test, show, feed=learn_feed)
        finally:
            router.close()
        m = report.manifest
        result.update(
            {
                "encoder": m.encoder_id,
                "encoder_threads": config.encoder.threads,
                "vector_index": m.vector_index,
                "build_seconds": m.build_seconds,
                "mined_rules": len(m.mined_rules),
                "calibration": m.calibration.model_dump(),
                "static": m.static.model_dump() if m.static else None,
                # Training and export wall time; a reused run reports the training time it recorded.
                "finetune_seconds": None if m.finetune is None else (
                    round(sum(m.finetune.epoch_seconds), 2) if m.finetune.cached else m.finetune.seconds),
                "finetune_cached": None if m.finetune is None else m.finetune.cached,
                "finetune": m.finetune.model_dump() if m.finetune else None,
            }
        )
        return result
    finally:
        remove_index(folder)  # the name is a symlink to a generation beside it: both go
        learn_log.unlink(missing_ok=True)
