"""The dispatcher's trace records, turned into metrics as they are written.

The dispatcher writes one ``kind: "call"`` record per provider attempt and one ``kind: "skill"``
record per step to its ``TraceSink`` (router/dispatch/_trace.py). ``ObservedSink`` passes each record
on to the configured sink unchanged, then counts it: the trace stays the one source of truth, and
the metrics agree with it by construction. ``build_server`` gives it to the Dispatcher it makes;
``create_app`` attaches the app's metrics (``observe``).

A step's ``outcome`` (the ``router_skill_steps_total`` label the failure-rate alert reads):
``ok`` (ok, pending_approval, rejected); ``refused`` by a budget, a cap, or the caller's own
input (parameters given by the caller that fail the skill's schema); ``failed`` otherwise: the
skill failed (SkillFailed), no model answered (FallbacksExhausted), the models could not extract
valid parameters (InvalidParameters once a model was called), the shared state was unreachable,
or the step was cut (``timeout``). An unknown status counts as failed, so a new error is seen.
"""

from __future__ import annotations

import logging
from typing import Any

from router.dispatch import Dispatcher, ModelRoutingConfig
from router.dispatch._trace import TraceSink, build_sink
from router.service._metrics import Metrics
from router.service._service import ClassifierService

log = logging.getLogger("router.service")

OK_STATUSES = frozenset({"ok", "pending_approval", "rejected"})
REFUSED_STATUSES = frozenset({"BudgetExceeded", "SessionsFull", "TooManyApprovals", "ApprovalError",
                              "ApprovalRunning", "SkillNotAllowed", "InputError", "InvalidParameters"})


def outcome(record: dict[str, Any]) -> str:
    status = record.get("status")
    if status in OK_STATUSES:
        return "ok"
    if status == "InvalidParameters" and record.get("calls", 0) > 0:
        return "failed"  # extracted by a model, and still invalid after the re-ask
    return "refused" if status in REFUSED_STATUSES else "failed"


class ObservedSink:
    """A ``TraceSink`` that writes to ``inner``, then counts each record in the attached ``Metrics``."""

    def __init__(self, inner: TraceSink) -> None:
        self.inner = inner
        self.metrics: Metrics | None = None
        self._failed = False

    @classmethod
    def for_routing(cls, routing: ModelRoutingConfig) -> ObservedSink:
        return cls(build_sink(routing.trace))

    def attach(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def write(self, record: dict[str, Any]) -> None:
        self.inner.write(record)
        if self.metrics is None:
            return
        try:
            if record.get("kind") == "call":
                self._call(self.metrics, record)
            elif record.get("kind") == "skill":
                self._skill(self.metrics, record)
        except Exception:  # a metric must never fail a dispatch, whose record is already written
            if not self._failed:
                self._failed = True
                log.exception("router: a trace record could not be counted in the metrics: %r", record)

    def close(self) -> None:
        self.inner.close()

    @staticmethod
    def _call(m: Metrics, r: dict[str, Any]) -> None:
        where = (r["stage"], r["provider"], r["model"])
        status = r["status"]
        m.provider_attempts.labels(*where, status).inc()
        if r.get("attempt", 0) > 0:  # 0: not sent (breaker open, or no time left): it has no latency
            m.provider_attempt_seconds.labels(*where).observe(r.get("latency_ms", 0.0) / 1000.0)
        if status == "ok" and r.get("fallback_from"):
            m.provider_fallbacks.labels(*where).inc()
        if r.get("tokens"):
            m.provider_tokens.labels(*where).inc(r["tokens"])
        if r.get("cost_usd"):
            m.provider_cost.labels(*where).inc(r["cost_usd"])
        if r.get("breaker") is not None:
            m.breaker_open.labels(r["provider"], r["model"]).set(1.0 if r["breaker"] == "open" else 0.0)

    @staticmethod
    def _skill(m: Metrics, r: dict[str, Any]) -> None:
        skill = r.get("skill") or ""
        m.skill_steps.labels(skill, r.get("status", ""), outcome(r)).inc()
        if r.get("handler") is not None:
            m.skill_handler.labels(skill, r["handler"]).inc()
        # The session's spend so far, read from the state (shared across replicas with a shared one);
        # null when the state could not be read.
        if r.get("session_cost_usd") is not None:
            m.session_cost.observe(float(r["session_cost_usd"]))


def stage_timeouts(routing: ModelRoutingConfig, handler_timeout_s: float) -> dict[str, float]:
    """Each stage's bound: the longest ``timeout_s`` of the models that may serve it (defaults,
    per-skill overrides, fallbacks); ``dispatch``: ``dispatch_timeout_s``; ``handler``: the handler's."""
    bounds: dict[str, float] = {"dispatch": routing.dispatch_timeout_s, "handler": handler_timeout_s}
    refs = [*routing.defaults.items(), *(item for stages in routing.overrides.values() for item in stages.items()),
            *((stage, ref) for stage, chain in routing.fallbacks.items() for ref in chain)]
    for stage, ref in refs:
        bounds[stage] = max(bounds.get(stage, 0.0), ref.timeout_s)
    return bounds


def observe(service: ClassifierService, dispatcher: Dispatcher | None) -> None:
    """The app's metrics: tier 2's breakers at each scrape, and with a dispatcher its stage bounds and,
    when its sink is an ``ObservedSink``, its trace records."""
    metrics = service.metrics
    metrics.watch_llm(lambda: service.router.escalator)
    if dispatcher is None:
        return
    for stage, seconds in stage_timeouts(dispatcher.config, dispatcher.handler_timeout_s).items():
        metrics.stage_timeout.labels(stage).set(seconds)
    if isinstance(dispatcher.sink, ObservedSink):
        dispatcher.sink.attach(metrics)
