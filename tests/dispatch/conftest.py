"""Dispatcher fixtures: the three loopback provider servers, keys in the environment, a recorded
sleep (Retry-After and backoff waits are asserted, not slept), a settable clock, test skills."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from router.dispatch import Dispatcher, SkillContext, SkillRegistry, model_routing_from_dict
from router.dispatch._trace import MemorySink
from router.testing import FakeAnthropic, FakeGemini, FakeOpenAI

KEYS = {"OPENAI_API_KEY": "sk-test-OPENAI-secret", "ANTHROPIC_API_KEY": "sk-ant-test-secret",
        "GEMINI_API_KEY": "AIza-test-secret"}
PAY = '{"amount": 20, "to": "sam"}'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Fakes:
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    gemini: FakeGemini

    def all(self) -> list[Any]:
        return [self.openai, self.anthropic, self.gemini]


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fakes]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    servers = Fakes(FakeOpenAI(api_key=KEYS["OPENAI_API_KEY"]), FakeAnthropic(api_key=KEYS["ANTHROPIC_API_KEY"]),
                    FakeGemini(api_key=KEYS["GEMINI_API_KEY"]))
    for server in servers.all():
        server.start()
    yield servers
    for server in servers.all():
        server.stop()


def provider_section(fakes: Fakes) -> dict[str, Any]:
    return {
        "openai": {"kind": "openai", "base_url": fakes.openai.url, "api_key_env": "OPENAI_API_KEY"},
        "anthropic": {"kind": "anthropic", "base_url": fakes.anthropic.url, "api_key_env": "ANTHROPIC_API_KEY"},
        "gemini": {"kind": "gemini", "base_url": fakes.gemini.url, "api_key_env": "GEMINI_API_KEY"},
    }


# extraction: openai -> gemini -> anthropic (the shipped chain); short timeouts for fault tests.
def routing(fakes: Fakes, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "providers": provider_section(fakes),
        "trace": {"sink": "memory"},
        "retry": {"initial_backoff_s": 0.01, "max_backoff_s": 0.05},
        "defaults": {
            "routing": {"provider": "anthropic", "model": "claude-haiku-4-5", "timeout_s": 2, "max_tokens": 64},
            "extraction": {"provider": "openai", "model": "gpt-5.4-nano", "timeout_s": 2, "max_tokens": 256},
            "formatting": {"provider": "anthropic", "model": "claude-haiku-4-5", "timeout_s": 2, "max_tokens": 256},
            "diagnostic": {"provider": "anthropic", "model": "claude-sonnet-4-6", "timeout_s": 2, "max_tokens": 256},
        },
        "fallbacks": {
            "extraction": [{"provider": "gemini", "model": "gemini-2.5-flash", "timeout_s": 2, "max_tokens": 256},
                           {"provider": "anthropic", "model": "claude-haiku-4-5", "timeout_s": 2,
                            "max_tokens": 256}],
            "formatting": [{"provider": "openai", "model": "gpt-5.4-nano", "timeout_s": 2, "max_tokens": 256}],
        },
    }
    data.update(overrides)
    return data


class PayParams(BaseModel):
    amount: float = Field(gt=0, le=10_000)
    to: str = Field(min_length=1)
    currency: Literal["USD", "EUR"] = "USD"


class BalanceParams(BaseModel):
    account: Literal["checking", "savings"] = "checking"


class BalanceResult(BaseModel):
    balance: float
    as_of: datetime


@dataclass
class Calls:
    """What the handlers were called with: the proof that invalid or unapproved work never ran."""

    pay: list[PayParams] = field(default_factory=list)
    balance: list[BalanceParams] = field(default_factory=list)
    balance_age_s: float = 0.0
    balance_result: dict[str, Any] | None = None


def registry(calls: Calls) -> SkillRegistry:
    reg = SkillRegistry()

    @reg.skill("pay", params=PayParams, writes=True, description="Send money to a person.")
    async def pay(params: PayParams, ctx: SkillContext) -> dict[str, Any]:
        calls.pay.append(params)
        return {"sent": params.amount, "to": params.to}

    @reg.skill("balance", params=BalanceParams, result=BalanceResult, max_age_s=300,
               description="Read an account balance.")
    async def balance(params: BalanceParams, ctx: SkillContext) -> dict[str, Any]:
        calls.balance.append(params)
        if calls.balance_result is not None:
            return calls.balance_result
        as_of = datetime.fromtimestamp(datetime.now(UTC).timestamp() - calls.balance_age_s, UTC)
        return {"balance": 120.5, "as_of": as_of.isoformat()}

    return reg


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """Records each wait instead of sleeping it."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@dataclass
class Harness:
    fakes: Fakes
    calls: Calls
    clock: Clock
    sleeps: Sleeps
    make: Callable[..., Dispatcher]

    def records(self, d: Dispatcher, kind: str = "call") -> list[dict[str, Any]]:
        assert isinstance(d.sink, MemorySink)
        return [r for r in d.sink.records if r["kind"] == kind]


@pytest.fixture
def harness(fakes: Fakes) -> Iterator[Harness]:
    made: list[Dispatcher] = []
    calls, clock, sleeps = Calls(), Clock(), Sleeps()

    def make(real_sleep: bool = False, **overrides: Any) -> Dispatcher:
        kwargs: dict[str, Any] = {"monotonic": clock}
        if not real_sleep:
            kwargs["sleep"] = sleeps
        for key in ("drill_stages", "handler_timeout_s"):
            if key in overrides:
                kwargs[key] = overrides.pop(key)
        d = Dispatcher(model_routing_from_dict(routing(fakes, **overrides)), registry(calls), **kwargs)
        made.append(d)
        return d

    yield Harness(fakes, calls, clock, sleeps, make)
    for d in made:
        d.close()
