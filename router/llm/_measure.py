"""The tier-2 gate measured at build time: does the LLM beat tier 1 on the escalated slice?"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from router._intents import OOS, Labelled
from router._progress import Progress, make_progress
from router._router import Router
from router.llm._config import LLMConfig, LLMGate
from router.llm._gate import decide_gate, tier2_metrics
from router.tiers import LOCAL


def measure_gate(folder: Path, llm: LLMConfig, val: Labelled, progress: bool | Progress = False) -> LLMGate:
    """Run tier 2 on (a sample of) the escalated validation queries; off if it does not beat tier 1.

    ``progress``: the steps, and a bar of the queries tier 2 is asked (see ``router.progress``)."""
    show = make_progress(progress)
    router = Router.load(folder, llm=llm.model_copy(update={"gate": "on"}))
    try:
        tier2 = router.tier2
        assert tier2 is not None
        with show.stage("tier-2 gate: tiers 0-1 on validation"):
            queries = router.chain.start(val.texts)
            router.chain.run(queries, kinds=LOCAL)  # tiers 0-1: what tier 2 would be asked
        fast = [q.decision for q in queries]
        escalated = [i for i, d in enumerate(fast) if d is not None and d.escalate]
        if len(escalated) > llm.gate_sample:
            rng = np.random.default_rng(0)
            escalated = sorted(rng.choice(escalated, llm.gate_sample, replace=False).tolist())
        with show.stage("tier-2 gate: load the LLM"):
            router.warm()
        asked = [(i, d) for i in escalated if (d := fast[i]) is not None]
        # Tiers 0-1 decide the same again, and tier 2 settles the escalated query.
        settled = [router.classify(val.texts[i]) for i, _ in show.iterate(asked, "tier-2 gate", unit="query")]
        known = set(router.artifact.intents.names)
        truth = [val.labels[i] if val.labels[i] in known else OOS for i in escalated]
        primary = llm.backends[0]
        return decide_gate(tier2_metrics(settled, truth), primary.label, primary.model or primary.backend)
    finally:
        router.close()
