"""Prometheus metrics, one registry per app (so two apps in one process do not collide).

Every metric, its labels and its meaning are listed in docs/operations.md, and the shipped alert
rules (``alerts.yml``) use only these. The dispatcher's metrics come from its trace records
(``dispatch/_observe.py``): one ``call`` record per provider attempt, one ``skill`` record per step.
The learner's applies are counted as they end (``watch_learner``, its ``on_apply`` hook), on the
thread that applied.
Tier 2's breaker states are read when /metrics is scraped, so they are never stale. They live in a
registry of their own (``scraped``), which ``render`` adds: under ``--workers N`` the samples of
``registry`` are every worker's, summed from prometheus_client's multiprocess files (the registry is
replaced then, service/_workers.py), while a scrape-time reading can only be the answering worker's.
"""

from __future__ import annotations

import platform
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from router._decision import Decision
from router._settings import environ
from router.llm._gate import was_escalated

if TYPE_CHECKING:
    from router.learn import ApplyReport, Learner

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1, 2, 4, 8)
# A dispatch route's request runs up to request_timeout_s + dispatch_timeout_s (60 s by default): the
# buckets reach past it, or its latency would sit in +Inf and no quantile could be compared with the budget.
_REQUEST_BUCKETS = (*_LATENCY_BUCKETS, 16, 32, 64, 128)
# Provider attempts: the shipped models' timeout_s (10, 20, 30, 60 s) are bucket bounds, so an attempt
# cut at its timeout lands in the bucket that ends there.
_ATTEMPT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600)
# A refit, check and swap: tens of milliseconds on a small index, seconds on CLINC150-sized ones.
_APPLY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
_COST_BUCKETS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100)
TOTAL = "total"  # the Decision's latency_us key for the whole classification: router_classify_seconds


def served_examples(learner: Learner) -> int:
    """Learned examples the Learner's router serves now: those trained on, less those not swapped in yet."""
    stats = learner.stats()
    return int(stats["n_learned"]) - int(stats["n_unserved"])


class _LLMBreakers:
    """``router_llm_breaker_open{backend}``, read from tier 2's breakers at each scrape: the escalator
    is looked up then (an index reload may bring another one), and a breaker's open state ends by
    itself after its cooldown, which a gauge set when a call fails would not see."""

    def __init__(self, escalator: Callable[[], Any]) -> None:
        self.escalator = escalator

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        escalator = self.escalator()
        if escalator is not None:
            for backend, breaker in escalator.breakers.items():
                family.add_metric([backend], 1.0 if breaker.state == "open" else 0.0)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("router_llm_breaker_open", "1 while a tier-2 backend's breaker is open "
                                 "(its calls are skipped and escalations degrade)", labels=["backend"])


class Metrics:
    def __init__(self) -> None:
        from router import __version__

        r = self.registry = CollectorRegistry()
        self.scraped = CollectorRegistry()  # read at each scrape, in the process that answers it
        self.build_info = Gauge("router_build_info", "1, labelled with the package's version and the Python "
                                "it runs on", ["version", "python"], registry=r)
        self.build_info.labels(__version__, platform.python_version()).set(1)
        # -- HTTP (the Guard) --
        self.requests = Counter("router_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.request_seconds = Histogram("router_request_seconds", "HTTP request latency", ["endpoint"],
                                         buckets=_REQUEST_BUCKETS, registry=r)
        self.in_flight = Gauge("router_in_flight_requests", "requests being served under max_in_flight", registry=r)
        self.dispatch_in_flight = Gauge("router_dispatch_in_flight_requests",
                                        "dispatcher requests being served under max_dispatch_in_flight", registry=r)
        self.rejected = Counter("router_rejected", "requests refused by a limit", ["limit"], registry=r)
        # -- classification --
        self.decisions = Counter("router_decisions", "Decisions by resolving tier", ["tier"], registry=r)
        self.escalated = Counter("router_escalated", "Decisions tier 1 escalated", registry=r)
        self.out_of_scope = Counter("router_out_of_scope", "Decisions out of scope", registry=r)
        self.degraded = Counter("router_degraded", "escalated Decisions tier 2 could not settle", registry=r)
        # Only real tiers: sum() over the tier label is the time spent in tiers. The whole is its own metric.
        self.tier_seconds = Histogram("router_tier_seconds", "time spent per tier", ["tier"],
                                      buckets=_LATENCY_BUCKETS, registry=r)
        self.classify_seconds = Histogram("router_classify_seconds", "time to classify one text, every tier it "
                                          "went through", buckets=_LATENCY_BUCKETS, registry=r)
        self.index_info = Gauge("router_index_info", "1 for the index serving now: its name, version (the first 12 "
                                "hex digits of its manifest's sha256) and build time", ["name", "version", "built_at"],
                                registry=r)
        self.batch_size = Histogram("router_batch_size", "texts per encoder batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        # -- dispatch: per HTTP response (dispatch/_serving.py) --
        self.dispatch = Counter("router_dispatch", "dispatch outcomes (status or error type)", ["status"], registry=r)
        self.dispatch_cost = Counter("router_dispatch_cost_usd", "provider cost of dispatches", registry=r)
        self.dispatch_fallbacks = Counter("router_dispatch_fallbacks", "dispatches served by a fallback model",
                                          registry=r)
        # -- the proxy: per HTTP response (proxy/_serving.py); its cost and fallbacks also count just above --
        self.proxy_requests = Counter("router_proxy_requests", "proxied chat requests by API (openai, anthropic), "
                                      "route (auto, model, refusal; none when refused before routing) and HTTP "
                                      "status", ["api", "route", "status"], registry=r)
        # -- dispatch: from the trace records (dispatch/_observe.py) --
        attempt = ["stage", "provider", "model"]
        self.provider_attempts = Counter("router_provider_attempts", "provider attempts by outcome (ok, timeout, "
                                         "deadline, circuit_open, http_<status>, ...)", [*attempt, "status"],
                                         registry=r)
        self.provider_attempt_seconds = Histogram("router_provider_attempt_seconds", "latency of provider "
                                                  "attempts that were sent", attempt, buckets=_ATTEMPT_BUCKETS,
                                                  registry=r)
        self.provider_fallbacks = Counter("router_provider_fallbacks", "answers given by a model other than the "
                                          "chain's primary (the model label is the fallback's)", attempt, registry=r)
        self.provider_tokens = Counter("router_provider_tokens", "tokens metered (input + output)", attempt,
                                       registry=r)
        self.provider_cost = Counter("router_provider_cost_usd", "cost metered, US dollars", attempt, registry=r)
        self.breaker_open = Gauge("router_breaker_open", "1 if the dispatcher's breaker of this provider/model was "
                                  "open at its latest attempt", ["provider", "model"], registry=r)
        self.stage_timeout = Gauge("router_stage_timeout_seconds", "the configured bound of a stage: the longest "
                                   "timeout_s of its models; dispatch: dispatch_timeout_s; handler: "
                                   "handler_timeout_s", ["stage"], registry=r)
        self.skill_steps = Counter("router_skill_steps", "dispatcher steps (dispatches, approvals, rejections) "
                                   "by status; outcome: ok, refused or failed", ["skill", "status", "outcome"],
                                   registry=r)
        self.skill_handler = Counter("router_skill_handler_runs", "skill handler runs by how they ended (ok, "
                                     "error, timeout, cancelled)", ["skill", "handler"], registry=r)
        self.session_cost = Histogram("router_session_cost_usd", "a session's cost so far, observed at each of "
                                      "its steps", buckets=_COST_BUCKETS, registry=r)
        # -- learning (service/learn/ and the serving index's Learner) --
        self.feedback = Counter("router_feedback", "feedback items by source (human, llm; invalid: a body "
                                "refused before its source was known) and outcome (queued, held_out, duplicate, "
                                "conflict, unknown_intent, not_allowed, rate_limited, invalid, error)",
                                ["source", "outcome"], registry=r)
        self.learn_applies = Counter("router_learn_applies", "learned states tried: swapped in, or refused by the "
                                     "held-out precision check", ["outcome"], registry=r)
        # Every worker serves the same log: the largest figure of the live ones is the index's.
        self.learned_examples = Gauge("router_learned_examples", "learned examples the serving index answers "
                                      "with (held-out ones excluded)", multiprocess_mode="livemax", registry=r)
        self.learn_apply_seconds = Histogram("router_learn_apply_seconds", "time to refit, check and swap one "
                                             "batch of learned examples", buckets=_APPLY_BUCKETS, registry=r)
        self._learners: weakref.WeakSet[Learner] = weakref.WeakSet()  # those watch_learner watches

    def record(self, decisions: list[Decision]) -> None:
        for d in decisions:
            self.decisions.labels(d.tier).inc()
            if was_escalated(d):
                self.escalated.inc()
            if d.out_of_scope:
                self.out_of_scope.inc()
            if d.degraded:
                self.degraded.inc()
            for tier, us in d.latency_us.items():
                (self.classify_seconds if tier == TOTAL else self.tier_seconds.labels(tier)).observe(us / 1e6)

    def watch_learner(self, learner: Learner) -> None:
        """Count ``learner``'s applies as they end, and set ``router_learned_examples`` from it now.

        Through the Learner's ``on_apply`` hook: it calls each callback with the report of every apply that
        refitted (swapped in, or refused by the check), on the thread that applied (its worker's, or a
        caller's); "nothing new" is none. Watching the same Learner twice adds nothing."""
        if learner in self._learners:
            return
        self._learners.add(learner)

        def applied(report: ApplyReport) -> None:
            self.learn_applies.labels("swapped" if report.swapped else "refused").inc()
            self.learn_apply_seconds.observe(report.seconds)
            self.learned_examples.set(served_examples(learner))

        learner.on_apply.append(applied)
        self.learned_examples.set(served_examples(learner))

    def watch_llm(self, escalator: Callable[[], Any]) -> None:
        """Export tier 2's breaker states; ``escalator`` returns the serving router's escalator (or None)."""
        self.scraped.register(_LLMBreakers(escalator))

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(self.scraped)

    _index_labels: tuple[str, str, str] | None = None  # the series set_index last set to 1

    def set_index(self, name: str, version: str, built_at: str) -> None:
        """``router_index_info{name,version,built_at}`` 1 for the index serving now; the one it replaced goes.
        Under ``--workers N`` a series cannot be removed (prometheus_client's multiprocess files keep it, and
        ``clear``/``remove`` only warn): the replaced one is set to 0 there."""
        previous, self._index_labels = self._index_labels, (name, version, built_at)
        if previous is not None and previous != self._index_labels:
            self.index_info.labels(*previous).set(0)
            if not environ("PROMETHEUS_MULTIPROC_DIR"):  # the condition prometheus_client itself reads
                self.index_info.remove(*previous)
        self.index_info.labels(name, version, built_at).set(1)
