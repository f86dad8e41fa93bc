"""``router eval-skills`` and ``router drill``: golden sets per skill, run against chosen models.

eval-skills: each candidate model alone (no fallbacks) extracts every golden case; a case is
correct when the validated parameters equal the golden ones. Reports accuracy, cost and cost per
correct answer per (skill, model), and names a winner per skill: the cheapest per correct answer
among the models within ``tolerance`` of the best accuracy.

drill: runs the golden set through one stage twice, as configured and with the stage's primary
left out (all of its traffic on the secondary), and reports what broke.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from router.dispatch._config import ModelRef, Stage
from router.dispatch._dispatcher import Dispatcher
from router.dispatch._extraction import validate_params
from router.errors import ConfigError, RouterError
from router.providers import ChatRequest, Message


@dataclass(frozen=True)
class GoldenCase:
    skill: str
    text: str
    params: dict[str, Any]


def load_golden(path: str | Path) -> list[GoldenCase]:
    cases = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"golden file {str(path)!r} cannot be read: {exc.strerror}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            cases.append(GoldenCase(str(row["skill"]), str(row["text"]), dict(row["params"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"golden file {str(path)!r} line {number}: need a JSON object with skill, text and "
                              f"params ({exc})") from None
    if not cases:
        raise ConfigError(f"golden file {str(path)!r} has no cases")
    return cases


@dataclass
class Outcome:
    correct: bool
    error: str | None
    cost: Decimal
    tokens: int
    latency_ms: float


async def _extract_case(d: Dispatcher, case: GoldenCase, session: str, chain: list[ModelRef] | None) -> Outcome:
    skill = d.skills.get(case.skill)
    expected = validate_params(skill, case.params).model_dump(mode="json")
    started = time.perf_counter()
    try:
        got, calls = await d.aextract(session, case.skill, case.text, chain=chain)
    except RouterError as exc:  # InvalidParameters, FallbacksExhausted, BudgetExceeded, ...
        return Outcome(False, type(exc).__name__ + ": " + str(exc)[:160], Decimal(0), 0,
                       (time.perf_counter() - started) * 1000)
    cost = sum((Decimal(str(c.cost_usd)) for c in calls), Decimal(0))
    return Outcome(got.model_dump(mode="json") == expected, None, cost, sum(c.tokens for c in calls),
                   (time.perf_counter() - started) * 1000)


@dataclass
class Row:
    skill: str
    model: str
    cases: int = 0
    correct: int = 0
    errors: int = 0
    cost_usd: Decimal = Decimal(0)
    tokens: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, o: Outcome) -> None:
        self.cases += 1
        self.correct += o.correct
        self.errors += o.error is not None
        self.cost_usd += o.cost
        self.tokens += o.tokens
        self.latencies.append(o.latency_ms)

    @property
    def accuracy(self) -> float:
        return self.correct / self.cases if self.cases else 0.0

    @property
    def cost_per_correct(self) -> Decimal | None:
        return (self.cost_usd / self.correct).quantize(Decimal("0.0000001")) if self.correct else None

    def as_dict(self) -> dict[str, Any]:
        return {"skill": self.skill, "model": self.model, "cases": self.cases, "correct": self.correct,
                "accuracy": round(self.accuracy, 4), "errors": self.errors, "cost_usd": float(self.cost_usd),
                "cost_per_correct_usd": None if self.cost_per_correct is None else float(self.cost_per_correct),
                "tokens": self.tokens,
                "latency_p50_ms": round(statistics.median(self.latencies), 2) if self.latencies else None}


def pick_winner(rows: list[Row], tolerance: float) -> Row | None:
    scored = [r for r in rows if r.correct]
    if not scored:
        return None
    best = max(r.accuracy for r in scored)
    near = [r for r in scored if r.accuracy >= best - tolerance]
    return min(near, key=lambda r: (r.cost_per_correct or Decimal("Infinity"), -r.accuracy))


async def eval_skills(d: Dispatcher, cases: list[GoldenCase], models: list[ModelRef], tolerance: float = 0.0,
                      concurrency: int = 8) -> dict[str, Any]:
    rows: dict[tuple[str, str], Row] = {}
    gate = asyncio.Semaphore(concurrency)

    async def run(i: int, case: GoldenCase, ref: ModelRef) -> None:
        async with gate:
            outcome = await _extract_case(d, case, f"eval-{ref.key}-{i}", [ref])
        rows.setdefault((case.skill, ref.key), Row(case.skill, ref.key)).add(outcome)

    await asyncio.gather(*(run(i, c, ref) for ref in models for i, c in enumerate(cases)))
    by_skill: dict[str, list[Row]] = {}
    for row in rows.values():
        by_skill.setdefault(row.skill, []).append(row)
    winners = {}
    for skill, skill_rows in sorted(by_skill.items()):
        winner = pick_winner(skill_rows, tolerance)
        winners[skill] = winner.model if winner else None
    ordered = sorted(rows.values(), key=lambda r: (r.skill, -r.accuracy, r.cost_usd))
    return {"rows": [r.as_dict() for r in ordered], "winners": winners, "tolerance": tolerance}


async def drill(d_primary: Dispatcher, d_drill: Dispatcher, cases: list[GoldenCase], stage: Stage) -> dict[str, Any]:
    """``d_drill`` was built with ``drill_stages={stage}``; both see the same cases."""

    async def run(d: Dispatcher, label: str) -> list[Outcome]:
        outcomes = []
        for i, case in enumerate(cases):
            if stage == "extraction":
                outcomes.append(await _extract_case(d, case, f"drill-{label}-{i}", None))
                continue
            started = time.perf_counter()
            request = ChatRequest(system=f"Drill of the {stage} stage. Answer briefly.",
                                  messages=(Message("user", case.text),))
            try:
                call = await d.acomplete(stage, case.skill, f"drill-{label}-{i}", request)
                outcomes.append(Outcome(True, None, call.cost, call.tokens, (time.perf_counter() - started) * 1000))
            except RouterError as exc:
                outcomes.append(Outcome(False, f"{type(exc).__name__}: {exc}"[:200], Decimal(0), 0,
                                        (time.perf_counter() - started) * 1000))
        return outcomes

    base, secondary = await run(d_primary, "primary"), await run(d_drill, "secondary")
    chains = {c.skill: [r.key for r in d_primary.caller.chain(c.skill, stage)] for c in cases}
    broke = [
        {"skill": c.skill, "text": c.text, "primary": "ok" if b.correct else (b.error or "wrong"),
         "secondary": s.error or "wrong parameters", "secondary_model": next(iter(chains[c.skill][1:]), None)}
        for c, b, s in zip(cases, base, secondary, strict=True) if b.correct and not s.correct
    ]

    def summary(outcomes: list[Outcome]) -> dict[str, Any]:
        lat = [o.latency_ms for o in outcomes]
        return {"ok": sum(o.correct for o in outcomes), "errors": dict(Counter(
            (o.error or "").split(":")[0] for o in outcomes if o.error)),
            "cost_usd": float(sum((o.cost for o in outcomes), Decimal(0))),
            "latency_p50_ms": round(statistics.median(lat), 2) if lat else None}

    no_secondary = sorted({skill for skill, chain in chains.items() if len(chain) < 2})
    return {"stage": stage, "cases": len(cases), "primary": summary(base), "secondary": summary(secondary),
            "chains": chains, "no_secondary": no_secondary, "broke": broke,
            "verdict": "ok" if not broke and not no_secondary else "broken"}


def model_refs(specs: list[str], template: ModelRef) -> list[ModelRef]:
    """``provider/model`` strings, with the timeout and output cap of ``template``."""
    refs = []
    for spec in specs:
        provider, sep, model = spec.partition("/")
        if not sep or not provider or not model:
            raise ConfigError(f"--models: {spec!r} is not provider/model (e.g. anthropic/claude-haiku-4-5)")
        refs.append(ModelRef(provider=provider, model=model, timeout_s=template.timeout_s,
                             max_tokens=template.max_tokens))
    return refs


__all__ = ["GoldenCase", "drill", "eval_skills", "load_golden", "model_refs", "pick_winner"]
