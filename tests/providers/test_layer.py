"""The one model-call layer: the registry, the shared clients, the chain's slots and its handling of
an adapter's bug, and the one behaviour for 429 and a missing key (tier 2 included)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from router.errors import ConfigError, FallbacksExhausted, RateLimited, RequestRejected
from router.llm import LLMBackendConfig, LLMConfig
from router.providers import (
    PROVIDERS,
    BreakerConfig,
    Chain,
    ChatRequest,
    Completion,
    HttpClients,
    LocalBreakers,
    Message,
    ProviderConfig,
    RetryConfig,
    Target,
    Usage,
    build_provider,
)
from router.testing import FakeVLLM

CHOICE = ChatRequest(system="s", messages=(Message("user", "Message: clock"),), choices=("alarm", "none"),
                     query="clock")


@pytest.fixture
def vllm() -> Iterator[FakeVLLM]:
    server = FakeVLLM().start()
    yield server
    server.stop()


def test_an_unknown_kind_is_a_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"providers.x.kind='nope': unknown model provider; known: anthropic, "
                                          r"gemini, llama_cpp, memory, openai, openai_compatible, vllm"):
        build_provider("x", ProviderConfig(kind="nope"), HttpClients())
    assert "vllm" in PROVIDERS and len(PROVIDERS) == 7


def test_an_unknown_tier2_backend_is_a_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"llm.backends\[\].backend='nope': unknown model provider; known: .*vllm"):
        LLMConfig(backends=[{"backend": "nope"}])


def test_structured_takes_only_the_values_of_its_kind() -> None:
    with pytest.raises(ValueError, match="structured='guided_choice' does not apply to kind 'openai_compatible'"):
        ProviderConfig(kind="openai_compatible", structured="guided_choice")
    with pytest.raises(ValueError, match="kind 'vllm' needs base_url"):
        ProviderConfig(kind="vllm")


def _tier2(backend: dict[str, Any]) -> tuple[Any, Target]:
    config = LLMBackendConfig.model_validate(backend)
    return build_provider(config.label, config.provider(), HttpClients()), config.target()


async def _once(provider: Any, target: Target, request: ChatRequest = CHOICE) -> Completion:
    try:
        result: Completion = await provider.complete(target.model, request, 2.0)
        return result
    finally:
        await provider._http.aclose()


def test_429_is_rate_limited_with_retry_after_for_the_tier2_backend_too(vllm: FakeVLLM) -> None:
    # vLLM is tier 2's OpenAI-compatible backend (the same adapter class, with vLLM's choice field).
    provider, target = _tier2({"backend": "vllm", "url": vllm.url, "model": vllm.model})
    vllm.fault("429")  # answers Retry-After: 1
    with pytest.raises(RateLimited) as info:
        asyncio.run(_once(provider, target))
    assert info.value.retry_after == 1.0 and info.value.retryable and info.value.reason == "rate_limited"


def test_a_missing_key_is_refused_per_call_for_the_tier2_backend_too(vllm: FakeVLLM, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    provider, target = _tier2({"backend": "vllm", "url": vllm.url, "model": vllm.model,
                               "api_key_env": "NO_SUCH_KEY"})
    assert "api_key_env='NO_SUCH_KEY' is not set" in caplog.text  # one warning at construction
    with pytest.raises(RequestRejected) as info:
        asyncio.run(_once(provider, target))
    assert info.value.reason == "no_key" and not info.value.retryable and vllm.requests == []
    monkeypatch.setenv("NO_SUCH_KEY", "k-123")  # read per call: a key set later is used
    assert asyncio.run(_once(provider, target)).text in CHOICE.choices  # type: ignore[operator]


def test_http_clients_give_one_client_per_loop() -> None:
    clients = HttpClients()

    async def twice() -> tuple[Any, Any]:
        first, second = await clients.client(), await clients.client()
        await clients.aclose()
        assert first.is_closed
        return first, second

    a1, a2 = asyncio.run(twice())
    b1, _ = asyncio.run(twice())
    assert a1 is a2 and a1 is not b1


def test_a_loop_that_ends_without_aclose_still_closes_its_client() -> None:
    clients = HttpClients()

    async def forgetful() -> Any:
        return await clients.client()  # no aclose: asyncio.run's shutdown closes it on its loop

    client = asyncio.run(forgetful())
    assert client.is_closed


class _Recorder:
    """A provider that answers after a short wait and records how many calls were in flight at once."""

    name = "slow"

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion:
        self.now += 1
        self.most = max(self.most, self.now)
        await asyncio.sleep(0.01)
        self.now -= 1
        return Completion("alarm", Usage(), model)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def test_concurrency_slots_bound_the_calls_in_flight_per_target() -> None:
    recorder = _Recorder()
    chain = Chain({"slow": recorder}, retry=RetryConfig(max_retries=0))
    target = Target("slow", "m", timeout_s=5.0, max_concurrency=2)

    async def many() -> list[Any]:
        return list(await asyncio.gather(*(chain.call([target], CHOICE) for _ in range(8))))

    results = asyncio.run(many())
    assert len(results) == 8 and recorder.most == 2
    asyncio.run(many())  # a second loop gets its own slots, no "bound to another loop" error
    assert recorder.most == 2


class _Buggy:
    name = "buggy"

    async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion:
        raise KeyError("a bug in an adapter")

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def test_an_unexpected_exception_counts_as_a_failure_and_the_next_target_answers() -> None:
    memory = build_provider("memory", ProviderConfig(kind="memory"), HttpClients())
    chain = Chain({"buggy": _Buggy(), "memory": memory}, retry=RetryConfig(max_retries=3))
    targets = [Target("buggy", "b"), Target("memory", "memory")]
    result = asyncio.run(chain.call(targets, CHOICE))
    assert result.completion.text == "alarm" and result.target.provider == "memory"
    assert result.fallback_from == "buggy/b"
    [(failed, error)] = result.errors
    assert failed.provider == "buggy" and error.reason == "error:KeyError"
    assert [a.status for a in result.attempts] == ["error:KeyError", "ok"]  # not retried: a bug stays a bug
    assert chain.breakers["buggy/b"].state == "closed"  # one failure counted, below the default 5
    with pytest.raises(FallbacksExhausted) as info:
        asyncio.run(chain.call(targets[:1], CHOICE))
    assert [e.reason for e in info.value.errors] == ["error:KeyError"]


def test_memory_answers_scripted_labels_and_plain_requests() -> None:
    memory = build_provider("memory", ProviderConfig(kind="memory", answers={"clock": "none"}), HttpClients())
    assert asyncio.run(memory.complete("memory", CHOICE, 1.0)).text == "none"
    plain = ChatRequest(system="s", messages=(Message("user", "hi"),))
    assert asyncio.run(memory.complete("memory", plain, 1.0)).text == "ok"


def test_chains_given_one_breakers_share_them_and_a_chain_asks_them_for_each_target() -> None:
    memory = build_provider("memory", ProviderConfig(kind="memory"), HttpClients())
    shared = LocalBreakers(BreakerConfig(failures=2, cooldown_s=600))
    first = Chain({"buggy": _Buggy(), "memory": memory}, retry=RetryConfig(max_retries=0), breakers=shared)
    second = Chain({"buggy": _Buggy(), "memory": memory}, breakers=shared)
    targets = [Target("buggy", "b"), Target("memory", "memory")]
    for _ in range(2):
        asyncio.run(first.call(targets, CHOICE))
    assert shared["buggy/b"].state == "open" and second.breaker(targets[0]) is shared["buggy/b"]
    result = asyncio.run(second.call(targets, CHOICE))  # skipped without a call: its breaker is open for both
    assert [a.status for a in result.attempts] == ["circuit_open", "ok"]
    assert isinstance(Chain({}).breakers, LocalBreakers)  # by default each chain keeps its own, in this process
