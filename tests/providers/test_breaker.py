from __future__ import annotations

from router.providers._breaker import CLOSED, HALF_OPEN, OPEN, BreakerConfig, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, failures: int = 5, window: float = 60.0, cooldown: float = 30.0) -> CircuitBreaker:
    return CircuitBreaker(BreakerConfig(failures=failures, window_s=window, cooldown_s=cooldown), clock)


def test_opens_at_the_nth_failure_within_the_window() -> None:
    clock = Clock()
    b = _breaker(clock)
    for _ in range(4):
        b.record_failure()
        clock.now += 1
    assert b.state == CLOSED and b.allow()
    b.record_failure()
    assert b.state == OPEN and not b.allow() and b.retry_after() == 30.0


def test_failures_spread_beyond_the_window_do_not_open() -> None:
    clock = Clock()
    b = _breaker(clock, failures=3, window=10)
    for _ in range(6):
        b.record_failure()
        clock.now += 6  # never 3 within 10 s
    assert b.state == CLOSED


def test_a_success_resets_the_count() -> None:
    clock = Clock()
    b = _breaker(clock, failures=2)
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state == CLOSED


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    b = _breaker(clock, failures=1, cooldown=5)
    b.record_failure()
    clock.now += 5
    assert b.state == HALF_OPEN
    assert b.allow() and not b.allow()  # the second caller waits for the probe's outcome
    b.record_success()
    assert b.state == CLOSED and b.allow()


def test_a_failed_probe_opens_for_a_full_cooldown() -> None:
    clock = Clock()
    b = _breaker(clock, failures=1, cooldown=5)
    b.record_failure()
    clock.now += 6
    assert b.allow()
    b.record_failure()
    assert b.state == OPEN and b.retry_after() == 5.0
    clock.now += 5
    assert b.allow()


def test_a_straggler_success_does_not_close_an_open_breaker() -> None:
    clock = Clock()
    b = _breaker(clock, failures=1, cooldown=5)
    b.record_failure()
    b.record_success()  # a call that started before the breaker opened
    assert b.state == OPEN and not b.allow()
    clock.now += 5
    assert b.allow()
    b.record_success()  # the probe
    assert b.state == CLOSED


def test_an_abandoned_probe_goes_back_and_only_its_holder_can_give_it_back() -> None:
    clock = Clock()
    b = _breaker(clock, failures=1, cooldown=5)
    b.record_failure()
    clock.now += 5
    assert b.allow("a") and not b.allow("b")
    b.abandon("b")  # not b's to give back
    assert not b.allow("b")
    b.abandon("a")  # its call was never made
    assert b.state == HALF_OPEN and b.allow("b") and not b.allow("c")


def test_a_probe_held_past_probe_s_is_presumed_lost() -> None:
    clock = Clock()
    b = _breaker(clock, failures=1, cooldown=5)
    b.record_failure()
    clock.now += 5
    assert b.allow("a", probe_s=40)
    clock.now += 39
    assert not b.allow("b", probe_s=40)
    clock.now += 1
    assert b.allow("b", probe_s=40) and not b.allow("c")  # b holds it now
    b.record_success()
    assert b.state == CLOSED
