"""Prometheus metrics, one registry per app (so two apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from router._decision import Decision
from router.llm._gate import was_escalated

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1, 2, 4, 8)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("router_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.request_seconds = Histogram("router_request_seconds", "HTTP request latency", ["endpoint"],
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("router_in_flight_requests", "requests being served under max_in_flight", registry=r)
        self.dispatch_in_flight = Gauge("router_dispatch_in_flight_requests",
                                        "dispatcher requests being served under max_dispatch_in_flight", registry=r)
        self.decisions = Counter("router_decisions", "Decisions by resolving tier", ["tier"], registry=r)
        self.escalated = Counter("router_escalated", "Decisions tier 1 escalated", registry=r)
        self.out_of_scope = Counter("router_out_of_scope", "Decisions out of scope", registry=r)
        self.degraded = Counter("router_degraded", "escalated Decisions tier 2 could not settle", registry=r)
        self.tier_seconds = Histogram("router_tier_seconds", "time spent per tier", ["tier"],
                                      buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("router_batch_size", "texts per encoder batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.rejected = Counter("router_rejected", "requests refused by a limit", ["limit"], registry=r)
        self.dispatch = Counter("router_dispatch", "dispatch outcomes (status or error type)", ["status"], registry=r)
        self.dispatch_cost = Counter("router_dispatch_cost_usd", "provider cost of dispatches", registry=r)
        self.dispatch_fallbacks = Counter("router_dispatch_fallbacks", "dispatches served by a fallback model",
                                          registry=r)

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
                self.tier_seconds.labels(tier).observe(us / 1e6)

    def render(self) -> bytes:
        return generate_latest(self.registry)
