from __future__ import annotations

from decimal import Decimal

import pytest

from router._decision import LLMCall
from router.bench._cost import CostModel
from router.bench._metrics import Record
from router.bench.methods._base import Outcome
from router.dispatch._config import Price
from router.errors import ConfigError
from router.llm._config import LLMBackendConfig

PRICE = Price(input=Decimal("0.20"), output=Decimal("1.25"), cached_input=Decimal("0.02"))


def test_local_work_is_priced_by_its_time_on_one_vcpu() -> None:
    model = CostModel(vcpu_hour_usd=3.6, price_model="m", price=PRICE, llm_threads=2, prompt_passes=1)
    records = [Record("q", "a", Outcome("a", True, 1.0, "embedding"), latency_us=4000.0)] * 10
    # 4 ms at $3.6/hour = $0.000004 a query, $0.004 per 1,000.
    assert model.per_1k(records) == {"usd_per_1k_remote_llm": pytest.approx(0.004),
                                     "usd_per_1k_self_hosted": pytest.approx(0.004)}


def test_an_llm_call_is_billed_once_per_prompt_at_remote_prices_or_by_its_cpu_time() -> None:
    model = CostModel(vcpu_hour_usd=3.6, price_model="m", price=PRICE, llm_threads=2, prompt_passes=2)
    # Two scoring passes of a 1,000-token prompt, 900 of them cached each time.
    call = LLMCall("llama_cpp", "m", latency_ms=1000.0, prompt_tokens=2000, cached_tokens=1800,
                   completion_tokens=300)
    records = [Record("q", "a", Outcome("a", True, 1.0, "llm", call), latency_us=1_004_000.0)]
    remote = (100 * 0.20 + 900 * 0.02 + 8 * 1.25) / 1e6  # one prompt, 8 answer tokens
    local = 0.004 * 3.6 / 3600
    cost = model.per_1k(records)
    assert cost["usd_per_1k_remote_llm"] == pytest.approx(1000 * (local + remote))
    assert cost["usd_per_1k_self_hosted"] == pytest.approx(1000 * (local + 1.0 * 2 * 3.6 / 3600))


def test_the_price_table_and_the_scoring_passes_come_from_config() -> None:
    logprob = LLMBackendConfig(backend="llama_cpp", model="x", threads=4)
    model = CostModel.from_table("gpt-5.4-nano", 0.05, logprob)
    assert (model.price.input, model.prompt_passes, model.llm_threads) == (Decimal("0.20"), 2, 4)
    assert CostModel.from_table("gpt-5.4-nano", 0.05, LLMBackendConfig(backend="memory")).prompt_passes == 1
    with pytest.raises(ConfigError, match="--price-model='nano' is not in the price table"):
        CostModel.from_table("nano", 0.05, logprob)
