"""``Chain.open_stream``: fallbacks until a stream begins, then the stream's end, failure or close told
to the meter, the breaker and the trace; the concurrency slot held while it runs; ``output_cap``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from router.errors import FallbacksExhausted, ProviderTimeout, ProviderUnavailable
from router.providers import (
    Attempt,
    AttemptInfo,
    BreakerConfig,
    Chain,
    ChatRequest,
    Completion,
    Deadline,
    HttpClients,
    LocalBreakers,
    Message,
    ProviderConfig,
    RetryConfig,
    StreamEnd,
    StreamEvent,
    Target,
    TextDelta,
    Usage,
    build_provider,
)

PLAIN = ChatRequest(system="", messages=(Message("user", "tell me"),), query="tell me")
ANSWER = "the quick brown fox"


class _Meter:
    """Records what the chain told it, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.records: list[Attempt] = []

    async def reserve(self, target: Target, request: ChatRequest) -> Any:
        self.events.append(("reserve", target.key, target.max_tokens, request.max_tokens))
        return len(self.events)

    async def settled(self, handle: Any, target: Target, completion: Completion) -> Decimal:
        self.events.append(("settled", target.key))
        return Decimal("0.5")

    async def spent(self, handle: Any, target: Target) -> tuple[Usage, Decimal]:
        self.events.append(("spent", target.key))
        return Usage(input_tokens=10, output_tokens=target.max_tokens, estimated=True), Decimal("0.25")

    async def released(self, handle: Any) -> None:
        self.events.append(("released",))

    async def record(self, attempt: Attempt, info: AttemptInfo) -> None:
        self.records.append(attempt)

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]


class _Scripted:
    """Streams ``ANSWER`` word by word; ``fail`` chooses where it goes wrong: "before" (no event), "mid" (after
    the first), "hang" (waits forever after the first), "empty" (ends without a StreamEnd). Counts its
    closed streams and the max_tokens it was sent."""

    name = "scripted"

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.opened = self.closed = 0
        self.max_tokens: list[int] = []
        self.gate: asyncio.Event | None = None  # when set: waits on it after the first event
        self.waiting = asyncio.Event()  # set once it waits on the gate

    async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion:
        self.max_tokens.append(request.max_tokens)
        return Completion(ANSWER, Usage(input_tokens=3, output_tokens=4), model)

    async def stream(self, model: str, request: ChatRequest, timeout_s: float) -> AsyncIterator[StreamEvent]:
        self.opened += 1
        self.max_tokens.append(request.max_tokens)
        try:
            if self.fail == "before":
                raise ProviderUnavailable(self.name, "HTTP 503", reason="http_503")
            if self.fail == "empty":
                return
            words = ANSWER.split(" ")
            for i, word in enumerate(words):
                yield TextDelta(word if i == len(words) - 1 else word + " ")
                if i == 0 and self.fail == "mid":
                    raise ProviderUnavailable(self.name, "connection failed: RemoteProtocolError", reason="connection")
                if i == 0 and self.fail == "hang":
                    await asyncio.Event().wait()
                if i == 0 and self.gate is not None:
                    self.waiting.set()
                    await self.gate.wait()
            yield StreamEnd(Completion(ANSWER, Usage(input_tokens=3, output_tokens=4), model, finish="stop"))
        finally:
            self.closed += 1

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def _chain(providers: dict[str, Any], **kwargs: Any) -> Chain:
    return Chain(providers, retry=RetryConfig(max_retries=0), **kwargs)


async def _drain(stream: Any) -> list[StreamEvent]:
    return [event async for event in stream]


def test_the_memory_provider_streams_its_answer_in_pieces_keeping_the_spaces() -> None:
    memory = build_provider("memory", ProviderConfig(kind="memory", answers={"tell me": ANSWER}), HttpClients())

    async def run() -> list[StreamEvent]:
        return [e async for e in memory.stream("memory", PLAIN, 1.0)]

    events = asyncio.run(run())
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["the ", "quick ", "brown ", "fox"]
    assert isinstance(events[-1], StreamEnd) and events[-1].completion.text == ANSWER
    assert sum(isinstance(e, StreamEnd) for e in events) == 1


def test_a_stream_is_settled_at_its_end_and_the_breaker_told_a_success() -> None:
    provider, meter = _Scripted(), _Meter()
    chain = _chain({"p": provider})

    async def run() -> tuple[Any, list[StreamEvent]]:
        stream = await chain.open_stream([Target("p", "m")], PLAIN, meter=meter)
        assert stream.completion is None and meter.kinds() == ["reserve"]  # not settled before its end
        return stream, await _drain(stream)

    stream, events = asyncio.run(run())
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == ANSWER
    assert stream.completion is not None and stream.completion.text == ANSWER
    assert stream.cost == Decimal("0.5") and stream.fallback_from is None and stream.target.key == "p/m"
    assert meter.kinds() == ["reserve", "settled"]
    assert [a.status for a in stream.attempts] == ["ok"] and stream.attempts[0].tokens == 7
    assert provider.closed == 1


def test_a_failure_before_the_first_event_falls_back_to_the_next_target() -> None:
    broken, good, meter = _Scripted("before"), _Scripted(), _Meter()
    chain = _chain({"broken": broken, "good": good}, breaker=BreakerConfig(failures=1))

    async def run() -> tuple[Any, list[StreamEvent]]:
        stream = await chain.open_stream([Target("broken", "a"), Target("good", "b")], PLAIN, meter=meter)
        return stream, await _drain(stream)

    stream, events = asyncio.run(run())
    assert stream.target.key == "good/b" and stream.fallback_from == "broken/a"
    assert isinstance(events[-1], StreamEnd)
    assert [a.status for a in stream.attempts] == ["http_503", "ok"]
    assert meter.kinds() == ["reserve", "released", "reserve", "settled"]  # nothing billed for the refusal
    assert chain.breaker(Target("broken", "a")).state == "open" and broken.closed == 1


def test_a_stream_that_ends_without_its_streamend_is_a_bad_response_and_falls_back() -> None:
    chain = _chain({"empty": _Scripted("empty"), "good": _Scripted()})

    async def run() -> Any:
        return await chain.open_stream([Target("empty", "a"), Target("good", "b")], PLAIN)

    stream = asyncio.run(run())
    assert stream.target.key == "good/b" and [a.status for a in stream.attempts][0] == "malformed"
    asyncio.run(stream.aclose())


def test_no_target_begins_a_stream_raises_fallbacks_exhausted() -> None:
    chain = _chain({"a": _Scripted("before"), "b": _Scripted("empty")})
    with pytest.raises(FallbacksExhausted) as info:
        asyncio.run(chain.open_stream([Target("a", "x"), Target("b", "y")], PLAIN, name="chat"))
    assert [e.reason for e in info.value.errors] == ["http_503", "malformed"]
    assert str(info.value).startswith("chat:")


def test_a_failure_after_the_first_event_raises_out_of_the_iteration_and_is_metered_spent() -> None:
    broken, good, meter = _Scripted("mid"), _Scripted(), _Meter()
    chain = _chain({"broken": broken, "good": good}, breaker=BreakerConfig(failures=1))
    seen: list[StreamEvent] = []

    async def run() -> Any:
        stream = await chain.open_stream([Target("broken", "a"), Target("good", "b")], PLAIN, meter=meter)
        with pytest.raises(ProviderUnavailable) as info:
            async for event in stream:
                seen.append(event)
        assert info.value.reason == "connection"
        assert await _drain(stream) == []  # ended: nothing more
        return stream

    stream = asyncio.run(run())
    assert seen == [TextDelta("the ")] and good.opened == 0  # no fallback once text was passed on
    assert meter.kinds() == ["reserve", "spent"] and stream.cost == Decimal("0.25")
    assert [a.status for a in stream.attempts] == ["connection"]
    assert "metered at the reserved worst case" in (stream.attempts[0].error or "")
    assert chain.breaker(Target("broken", "a")).state == "open"  # the failure was told
    assert broken.closed == 1 and stream.completion is None


def test_a_stalled_stream_times_out_within_the_targets_timeout() -> None:
    meter = _Meter()
    provider = _Scripted("hang")
    chain = _chain({"p": provider})

    async def run() -> Any:
        stream = await chain.open_stream([Target("p", "m", timeout_s=0.05)], PLAIN, meter=meter)
        with pytest.raises(ProviderTimeout):
            await _drain(stream)
        return stream

    stream = asyncio.run(run())
    assert [a.status for a in stream.attempts] == ["timeout"] and meter.kinds() == ["reserve", "spent"]
    assert provider.closed == 1


def _half_open() -> tuple[LocalBreakers, list[float]]:
    now = [0.0]
    breakers = LocalBreakers(BreakerConfig(failures=1, cooldown_s=10), clock=lambda: now[0])
    breakers["p/m"].record_failure()
    now[0] = 11.0
    assert breakers["p/m"].state == "half_open"
    return breakers, now


def test_aclose_mid_stream_ends_the_upstream_stream_and_gives_the_probe_back() -> None:
    breakers, _ = _half_open()
    provider, meter = _Scripted(), _Meter()
    provider.gate = asyncio.Event()  # never set: the answer stops after its first word
    chain = _chain({"p": provider}, breakers=breakers)

    async def run() -> Any:
        stream = await chain.open_stream([Target("p", "m")], PLAIN, meter=meter)
        assert not breakers["p/m"].allow("someone else")  # the stream holds the probe
        assert await anext(stream) == TextDelta("the ")
        await stream.aclose()
        await stream.aclose()  # once only
        return stream

    stream = asyncio.run(run())
    assert provider.closed == 1 and meter.kinds() == ["reserve", "spent"]
    assert [a.status for a in stream.attempts] == ["cancelled"] and "client" in (stream.attempts[0].error or "")
    # not the provider's fault: the breaker was told nothing, and the probe is free for the next caller
    assert breakers["p/m"].state == "half_open" and breakers["p/m"].allow("someone else")


def test_a_cancelled_consumer_is_a_client_close() -> None:
    provider, meter = _Scripted(), _Meter()
    provider.gate = asyncio.Event()
    chain = _chain({"p": provider})

    async def run() -> Any:
        stream = await chain.open_stream([Target("p", "m")], PLAIN, meter=meter)
        task = asyncio.create_task(_drain(stream))
        await provider.waiting.wait()  # the consumer is waiting for the second event
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return stream

    stream = asyncio.run(run())
    assert provider.closed == 1 and meter.kinds() == ["reserve", "spent"]
    assert [a.status for a in stream.attempts] == ["cancelled"]


def test_a_consumer_cancelled_again_while_cleaning_up_still_meters_and_closes() -> None:
    class _SlowMeter(_Meter):
        def __init__(self) -> None:
            super().__init__()
            self.gate, self.in_spent = asyncio.Event(), asyncio.Event()

        async def spent(self, handle: Any, target: Target) -> tuple[Usage, Decimal]:
            self.in_spent.set()
            await self.gate.wait()
            return await super().spent(handle, target)

    provider, meter = _Scripted(), _SlowMeter()
    provider.gate = asyncio.Event()
    chain = _chain({"p": provider})

    async def run() -> Any:
        stream = await chain.open_stream([Target("p", "m", max_concurrency=1)], PLAIN, meter=meter)
        task = asyncio.create_task(_drain(stream))
        await provider.waiting.wait()
        task.cancel()
        await meter.in_spent.wait()
        task.cancel()  # anyio cancels a task gone out of scope at each await: its cleanup must still finish
        with pytest.raises(asyncio.CancelledError):
            await task
        meter.gate.set()
        for _ in range(100):
            if provider.closed:
                break
            await asyncio.sleep(0)
        assert provider.gate is not None
        provider.gate.set()
        await _drain(await chain.open_stream([Target("p", "m", max_concurrency=1)], PLAIN))  # the slot came back
        return stream

    stream = asyncio.run(run())
    assert meter.kinds() == ["reserve", "spent"] and provider.closed == 2
    assert [a.status for a in stream.attempts] == ["cancelled"]


def test_the_concurrency_slot_is_held_until_the_stream_ends() -> None:
    provider = _Scripted()
    provider.gate = asyncio.Event()
    chain = _chain({"p": provider})
    target = Target("p", "m", max_concurrency=1)

    async def run() -> None:
        first = await chain.open_stream([target], PLAIN)
        second = asyncio.create_task(chain.open_stream([target], PLAIN))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not second.done() and provider.opened == 1  # waiting for the slot
        assert provider.gate is not None
        provider.gate.set()
        await _drain(first)
        stream = await second
        await _drain(stream)
        assert provider.opened == 2

    asyncio.run(run())


def test_output_cap_lowers_what_is_sent_and_reserved_never_raises_it() -> None:
    provider, meter = _Scripted(), _Meter()
    chain = _chain({"p": provider})
    target = Target("p", "m", max_tokens=64)

    async def run() -> None:
        await _drain(await chain.open_stream([target], ChatRequest(system="", messages=PLAIN.messages,
                                                                   output_cap=10), meter=meter))
        await chain.call([target], ChatRequest(system="", messages=PLAIN.messages, output_cap=10), meter=meter)
        await chain.call([target], ChatRequest(system="", messages=PLAIN.messages, output_cap=500), meter=meter)
        await chain.call([target], PLAIN, meter=meter)

    asyncio.run(run())
    assert provider.max_tokens == [10, 10, 64, 64]
    reserved = [e for e in meter.events if e[0] == "reserve"]
    assert [(e[2], e[3]) for e in reserved] == [(10, 10), (10, 10), (64, 64), (64, 64)]


def test_a_stream_ending_at_its_first_event_is_settled_at_once() -> None:
    class _Whole(_Scripted):
        async def stream(self, model: str, request: ChatRequest, timeout_s: float) -> AsyncIterator[StreamEvent]:
            yield StreamEnd(Completion("", Usage(), model))

    meter = _Meter()
    chain = _chain({"p": _Whole()})

    async def run() -> list[StreamEvent]:
        return await _drain(await chain.open_stream([Target("p", "m")], PLAIN, meter=meter))

    [event] = asyncio.run(run())
    assert isinstance(event, StreamEnd) and meter.kinds() == ["reserve", "settled"]


def test_an_adapter_bug_mid_stream_is_a_provider_error() -> None:
    class _Buggy(_Scripted):
        async def stream(self, model: str, request: ChatRequest, timeout_s: float) -> AsyncIterator[StreamEvent]:
            yield TextDelta("a")
            raise KeyError("bug")

    chain = _chain({"p": _Buggy()})

    async def run() -> None:
        stream = await chain.open_stream([Target("p", "m")], PLAIN)
        with pytest.raises(ProviderUnavailable, match="KeyError"):
            await _drain(stream)

    asyncio.run(run())



def test_a_provider_without_stream_answers_whole_as_one_piece() -> None:
    class _Old:
        name = "old"

        async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion:
            return Completion(ANSWER, Usage(input_tokens=1, output_tokens=2), model)

    chain = _chain({"old": _Old()})

    async def run() -> list[StreamEvent]:
        return await _drain(await chain.open_stream([Target("old", "m")], PLAIN))

    events = asyncio.run(run())
    assert events[0] == TextDelta(ANSWER) and isinstance(events[1], StreamEnd) and len(events) == 2


def test_aclose_from_another_task_cancels_the_pending_read_and_tells_one_outcome() -> None:
    breakers, _ = _half_open()
    provider, meter = _Scripted(), _Meter()
    provider.gate = asyncio.Event()
    chain = _chain({"p": provider}, breakers=breakers)

    async def run() -> Any:
        stream = await chain.open_stream([Target("p", "m", max_concurrency=1)], PLAIN, meter=meter)
        assert await anext(stream) == TextDelta("the ")
        reader = asyncio.create_task(anext(stream))  # waits for the next piece
        await provider.waiting.wait()
        await stream.aclose()  # the client went away, seen by another task
        # the upstream stream is closed and the outcome told by the time aclose returns
        assert provider.closed == 1 and meter.kinds() == ["reserve", "spent"]
        with pytest.raises(StopAsyncIteration):  # the reader sees the stream end, not a cancellation
            await reader
        assert provider.gate is not None
        provider.gate.set()
        assert await _drain(stream) == []
        # the slot came back: a second stream on the one-slot target begins and ends
        await _drain(await chain.open_stream([Target("p", "m", max_concurrency=1)], PLAIN))
        return stream

    stream = asyncio.run(run())
    assert meter.kinds() == ["reserve", "spent"] and [a.status for a in stream.attempts] == ["cancelled"]
    assert stream.completion is None and "client" in (stream.attempts[0].error or "")
    assert breakers["p/m"].state == "closed"  # the probe went back, and the second stream's success closed it


def test_aclose_while_the_last_event_is_on_its_way_tells_no_second_outcome() -> None:
    class _Two(_Scripted):
        async def stream(self, model: str, request: ChatRequest, timeout_s: float) -> AsyncIterator[StreamEvent]:
            try:
                yield TextDelta("a")
                self.waiting.set()
                assert self.gate is not None
                await self.gate.wait()
                yield StreamEnd(Completion("a", Usage(input_tokens=1, output_tokens=1), model))
            finally:
                self.closed += 1

    provider, meter = _Two(), _Meter()
    provider.gate = asyncio.Event()
    chain = _chain({"p": provider})

    async def run() -> tuple[Any, BaseException | StreamEvent]:
        stream = await chain.open_stream([Target("p", "m")], PLAIN, meter=meter)
        await anext(stream)
        reader = asyncio.create_task(anext(stream))
        await provider.waiting.wait()
        closing = asyncio.create_task(stream.aclose())
        assert provider.gate is not None
        provider.gate.set()  # the StreamEnd is ready as the close comes
        await closing
        try:
            return stream, await reader
        except (StopAsyncIteration, asyncio.CancelledError) as exc:
            return stream, exc

    stream, seen = asyncio.run(run())
    assert isinstance(seen, StopAsyncIteration)
    assert meter.kinds() == ["reserve", "spent"] and [a.status for a in stream.attempts] == ["cancelled"]
    assert provider.closed == 1


def test_a_reader_cancelled_by_its_own_caller_still_sees_its_cancellation_when_aclose_comes_too() -> None:
    provider, meter = _Scripted(), _Meter()
    provider.gate = asyncio.Event()
    chain = _chain({"p": provider})

    async def run() -> None:
        stream = await chain.open_stream([Target("p", "m")], PLAIN, meter=meter)
        await anext(stream)
        reader = asyncio.create_task(_drain(stream))
        await provider.waiting.wait()
        reader.cancel()  # its own caller gave up on it, and aclose comes as well
        await stream.aclose()
        with pytest.raises(asyncio.CancelledError):
            await reader

    asyncio.run(run())
    assert meter.kinds() == ["reserve", "spent"] and provider.closed == 1


def test_a_second_reader_at_once_is_refused() -> None:
    provider = _Scripted()
    provider.gate = asyncio.Event()
    chain = _chain({"p": provider})

    async def run() -> None:
        stream = await chain.open_stream([Target("p", "m")], PLAIN)
        await anext(stream)
        first = asyncio.create_task(anext(stream))
        await provider.waiting.wait()
        with pytest.raises(RuntimeError, match="already being read"):
            await anext(stream)
        assert provider.gate is not None
        provider.gate.set()
        assert await first == TextDelta("quick ")
        await _drain(stream)

    asyncio.run(run())


def test_a_started_streams_gaps_are_bounded_by_the_targets_timeout_not_the_deadline_cut() -> None:
    class _Pausing(_Scripted):
        async def stream(self, model: str, request: ChatRequest, timeout_s: float) -> AsyncIterator[StreamEvent]:
            self.bounds.append(timeout_s)
            yield TextDelta("a ")
            await asyncio.sleep(0.4)  # longer than the deadline left for the first event, well within timeout_s
            yield TextDelta("b")
            yield StreamEnd(Completion("a b", Usage(input_tokens=1, output_tokens=2), model))

    provider, meter = _Pausing(), _Meter()
    provider.bounds = []  # type: ignore[attr-defined]
    chain = _chain({"p": provider})

    async def run() -> tuple[Any, list[StreamEvent]]:
        deadline = Deadline(0.2)  # the first event must come within 0.2 s
        stream = await chain.open_stream([Target("p", "m", timeout_s=5.0)], PLAIN, meter=meter, deadline=deadline)
        return stream, await _drain(stream)

    stream, events = asyncio.run(run())
    assert isinstance(events[-1], StreamEnd) and events[-1].completion.text == "a b"
    assert provider.bounds == [5.0]  # type: ignore[attr-defined]  # the provider's gaps: the model's timeout_s
    assert [a.status for a in stream.attempts] == ["ok"] and meter.kinds() == ["reserve", "settled"]


def test_the_first_event_still_waits_no_longer_than_the_deadline_leaves() -> None:
    class _Late(_Scripted):
        async def stream(self, model: str, request: ChatRequest, timeout_s: float) -> AsyncIterator[StreamEvent]:
            await asyncio.Event().wait()
            yield TextDelta("never")

    chain = _chain({"p": _Late()})

    async def run() -> None:
        await chain.open_stream([Target("p", "m", timeout_s=30.0)], PLAIN, deadline=Deadline(0.3))

    with pytest.raises(FallbacksExhausted) as info:
        asyncio.run(run())
    assert [e.reason for e in info.value.errors] == ["timeout"]


class _GatedMeter(_Meter):
    """Waits on ``gate`` inside ``settled`` (``in_settled`` set once there)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.in_settled = asyncio.Event(), asyncio.Event()

    async def settled(self, handle: Any, target: Target, completion: Completion) -> Decimal:
        self.in_settled.set()
        await self.gate.wait()
        return await super().settled(handle, target, completion)


def test_a_call_cancelled_while_settling_still_settles_and_gives_the_slot_back() -> None:
    provider, meter = _Scripted(), _GatedMeter()
    chain = _chain({"p": provider})
    target = Target("p", "m", max_concurrency=1)

    async def run() -> None:
        call = asyncio.create_task(chain.call([target], PLAIN, meter=meter))
        await meter.in_settled.wait()
        call.cancel()  # the caller went away while the answer was being settled
        with pytest.raises(asyncio.CancelledError):
            await call
        meter.gate.set()
        result = await chain.call([target], PLAIN)  # the slot came back
        assert result.completion.text == ANSWER

    asyncio.run(run())
    assert meter.kinds() == ["reserve", "settled"]
    assert [a.status for a in meter.records] == ["ok"]


class _SlowAbandon(LocalBreakers):
    """Giving a probe back waits on ``gate`` (a shared state's round trip); ``in_abandon`` set once there."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate, self.in_abandon = asyncio.Event(), asyncio.Event()
        self.abandoned: list[str] = []

    async def abandon(self, key: str, token: str = "") -> None:
        self.in_abandon.set()
        await self.gate.wait()
        await super().abandon(key, token)
        self.abandoned.append(key)


def test_a_call_cancelled_again_while_giving_its_probe_back_still_gives_it_back() -> None:
    class _Hanging(_Scripted):
        async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion:
            self.waiting.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    now = [0.0]
    breakers = _SlowAbandon(BreakerConfig(failures=1, cooldown_s=10), clock=lambda: now[0])
    breakers["p/m"].record_failure()
    now[0] = 11.0  # half-open: the call below holds the probe
    provider = _Hanging()
    chain = _chain({"p": provider}, breakers=breakers)

    async def run() -> None:
        call = asyncio.create_task(chain.call([Target("p", "m")], PLAIN))
        await provider.waiting.wait()
        call.cancel()  # cancelled in flight: its outcome is unknown, so its probe goes back
        await breakers.in_abandon.wait()
        call.cancel()  # and cancelled again while it goes back (anyio cancels at every await)
        with pytest.raises(asyncio.CancelledError):
            await call
        breakers.gate.set()
        for _ in range(20):
            if breakers.abandoned:
                break
            await asyncio.sleep(0)

    asyncio.run(run())
    assert breakers.abandoned == ["p/m"] and breakers["p/m"].allow("someone else")
