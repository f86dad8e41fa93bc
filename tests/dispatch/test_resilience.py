"""Retries, Retry-After, breakers and fallbacks, against the loopback providers."""

from __future__ import annotations

import pytest

from router.errors import FallbacksExhausted
from tests.dispatch.conftest import PAY, Harness


def test_retries_stop_at_3_and_wait_retry_after(harness: Harness) -> None:
    f = harness.fakes
    f.openai.retry_after = "2"
    f.openai.always("429")
    f.gemini.script("balance please", '{"account": "savings"}')
    d = harness.make()
    result = d.dispatch("s", "balance", text="balance please")
    openai_calls = [r for r in harness.records(d) if r["provider"] == "openai"]
    # one attempt and 3 retries, each retry after exactly the provider's Retry-After
    assert [r["attempt"] for r in openai_calls] == [1, 2, 3, 4]
    assert len(f.openai.requests) == 4
    assert harness.sleeps.waits == [2.0, 2.0, 2.0]
    assert result.calls[0].provider == "gemini" and result.params == {"account": "savings"}


def test_gemini_retry_delay_in_the_body_is_honoured(harness: Harness) -> None:
    f = harness.fakes
    f.gemini.retry_after = "7"
    f.gemini.fault("429")
    f.gemini.script("balance please", '{"account": "savings"}')
    d = harness.make(defaults={**_defaults(harness), "extraction": {"provider": "gemini", "model": "gemini-2.5-flash",
                                                                     "timeout_s": 2}})
    d.dispatch("s", "balance", text="balance please")
    assert harness.sleeps.waits == [7.0]


def test_backoff_without_retry_after_is_jittered_and_bounded(harness: Harness) -> None:
    harness.fakes.openai.fault("500", times=3)
    d = harness.make(retry={"initial_backoff_s": 0.1, "max_backoff_s": 0.3})
    d.dispatch("s", "balance", text="balance please")
    assert len(harness.sleeps.waits) == 3
    assert all(0 <= w <= 0.3 for w in harness.sleeps.waits)
    assert [r["status"] for r in harness.records(d)] == [
        "http_500", "http_500", "http_500", "ok"]


def test_retry_after_longer_than_accepted_skips_to_the_next_model(harness: Harness) -> None:
    f = harness.fakes
    f.openai.retry_after = "120"
    f.openai.fault("429")
    d = harness.make()
    result = d.dispatch("s", "balance", text="balance please")
    assert harness.sleeps.waits == []
    assert len(f.openai.requests) == 1 and result.calls[0].provider == "gemini"


@pytest.mark.parametrize("fault, reason", [("400", "http_400"), ("401", "http_401"), ("quota", "quota")])
def test_non_retryable_errors_are_not_retried_and_say_so(harness: Harness, fault: str, reason: str) -> None:
    f = harness.fakes
    f.openai.always(fault)
    f.anthropic.always(fault)
    f.gemini.always("400")  # Gemini's quota 429 carries no code that tells it from rate limiting
    d = harness.make()
    with pytest.raises(FallbacksExhausted) as info:
        d.dispatch("s", "balance", text="balance please")
    assert [len(s.requests) for s in f.all()] == [1, 1, 1]
    assert harness.sleeps.waits == []
    assert [e.reason for e in info.value.errors] == [reason, "http_400", reason]
    assert all("not retr" in str(e) for e in info.value.errors)


def test_breaker_opens_at_the_5th_failure_and_probes(harness: Harness) -> None:
    f = harness.fakes
    d = harness.make(retry={"max_retries": 0})
    f.openai.always("500")
    for _ in range(4):  # failures 1-4 stay under the threshold: the primary is still tried
        d.dispatch("s", "balance", text="balance please")
    assert d.caller.breakers["openai/gpt-5.4-nano"].state == "closed"
    d.dispatch("s", "balance", text="balance please")  # the 5th failure within 10 minutes
    assert d.caller.breakers["openai/gpt-5.4-nano"].state == "open"
    assert len(f.openai.requests) == 5

    result = d.dispatch("s", "balance", text="balance please")  # skipped without a request
    assert len(f.openai.requests) == 5 and result.calls[0].provider == "gemini"
    skip = [r for r in harness.records(d) if r["status"] == "circuit_open"]
    assert skip and skip[-1]["provider"] == "openai" and skip[-1]["attempt"] == 0

    harness.clock.now += 31  # past the 30 s cooldown: one probe goes through
    f.openai.always(None)
    result = d.dispatch("s", "balance", text="balance please")
    assert len(f.openai.requests) == 6 and result.calls[0].provider == "openai"
    assert d.caller.breakers["openai/gpt-5.4-nano"].state == "closed"


def test_successes_in_between_do_not_reset_the_count(harness: Harness) -> None:
    f = harness.fakes
    d = harness.make(retry={"max_retries": 0})
    for _ in range(4):
        f.openai.fault("500")
        d.dispatch("s", "balance", text="balance please")  # fails over to gemini
        d.dispatch("s", "balance", text="balance please")  # openai answers
    assert d.caller.breakers["openai/gpt-5.4-nano"].state == "closed"
    f.openai.fault("500")
    d.dispatch("s", "balance", text="balance please")
    assert d.caller.breakers["openai/gpt-5.4-nano"].state == "open"


def test_failures_outside_the_10_minute_window_do_not_open_it(harness: Harness) -> None:
    f = harness.fakes
    d = harness.make(retry={"max_retries": 0})
    f.openai.always("500")
    for _ in range(4):
        d.dispatch("s", "balance", text="balance please")
    harness.clock.now += 601
    d.dispatch("s", "balance", text="balance please")
    assert d.caller.breakers["openai/gpt-5.4-nano"].state == "closed"


def test_a_failed_probe_opens_it_again_without_retrying(harness: Harness) -> None:
    f = harness.fakes
    d = harness.make()
    f.openai.always("500")
    d.dispatch("s", "balance", text="balance please")  # 4 attempts
    d.dispatch("s", "balance", text="balance please")  # 5th attempt opens it; the rest is CircuitOpen
    assert len(f.openai.requests) == 5
    harness.clock.now += 31
    d.dispatch("s", "balance", text="balance please")
    assert len(f.openai.requests) == 6  # one probe, no retries behind it
    assert d.caller.breakers["openai/gpt-5.4-nano"].state == "open"


def test_fallbacks_are_taken_in_order_and_the_trace_says_so(harness: Harness) -> None:
    f = harness.fakes
    f.openai.always("500")
    f.gemini.always("overloaded")
    f.anthropic.script("balance please", '{"account": "savings"}')
    d = harness.make(retry={"max_retries": 1})
    result = d.dispatch("s", "balance", text="balance please")
    calls = harness.records(d)
    assert [(r["provider"], r["status"]) for r in calls] == [
        ("openai", "http_500"), ("openai", "http_500"), ("gemini", "http_503"), ("gemini", "http_503"),
        ("anthropic", "ok")]
    assert [r["fallback_from"] for r in calls] == [None, None] + ["openai/gpt-5.4-nano"] * 3
    assert result.fallback_taken and result.calls[0].fallback_from == "openai/gpt-5.4-nano"
    assert result.params == {"account": "savings"}


def test_anthropic_529_is_retried(harness: Harness) -> None:
    f = harness.fakes
    f.anthropic.fault("overloaded")
    f.anthropic.script("balance please", '{"account": "savings"}')
    d = harness.make(defaults={**_defaults(harness), "extraction": {"provider": "anthropic",
                                                                     "model": "claude-haiku-4-5", "timeout_s": 2}})
    d.dispatch("s", "balance", text="balance please")
    assert [r["status"] for r in harness.records(d)] == ["http_529", "ok"]


def test_every_model_failing_is_a_clear_error_naming_each(harness: Harness) -> None:
    for server in harness.fakes.all():
        server.always("500")
    d = harness.make(retry={"max_retries": 0})
    with pytest.raises(FallbacksExhausted, match=r"openai/gpt-5.4-nano: http_500; gemini/gemini-2.5-flash: "
                                                 r"http_500; anthropic/claude-haiku-4-5: http_500"):
        d.dispatch("s", "balance", text="balance please")


@pytest.mark.parametrize("fault, reason", [("malformed", "malformed"), ("drop", "connection")])
def test_broken_bodies_and_dropped_connections_fall_back(harness: Harness, fault: str, reason: str) -> None:
    harness.fakes.openai.always(fault)
    d = harness.make(retry={"max_retries": 0})
    result = d.dispatch("s", "balance", text="balance please")
    assert harness.records(d)[0]["status"] == reason
    assert result.calls[0].provider == "gemini"


def test_a_slow_provider_times_out_and_falls_back(harness: Harness) -> None:
    harness.fakes.openai.always("slow", seconds=3)
    d = harness.make(real_sleep=True, retry={"max_retries": 0},
                     defaults={**_defaults(harness), "extraction": {"provider": "openai", "model": "gpt-5.4-nano",
                                                                     "timeout_s": 0.3}})
    result = d.dispatch("s", "balance", text="balance please")
    first = harness.records(d)[0]
    assert first["status"] == "timeout" and 250 < first["latency_ms"] < 2000
    assert result.calls[0].provider == "gemini"


def _defaults(harness: Harness) -> dict[str, object]:
    from tests.dispatch.conftest import routing

    return dict(routing(harness.fakes)["defaults"])


def test_pay_script_constant_is_valid_json() -> None:
    import json

    assert json.loads(PAY)["amount"] == 20
