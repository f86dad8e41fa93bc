"""Cost of one provider call from the price table, exact to the cent (Decimal, not float)."""

from __future__ import annotations

from decimal import Decimal

from router.dispatch.config import Price
from router.dispatch.providers.base import Usage

_MILLION = Decimal(1_000_000)
# Stored and summed at this precision; far below a cent, so totals add up exactly.
QUANTUM = Decimal("0.0000000001")


def call_cost(price: Price, usage: Usage) -> Decimal:
    cost = (
        usage.input_tokens * price.input
        + usage.cached_input_tokens * price.cached
        + usage.cache_write_tokens * price.write
        + usage.output_tokens * price.output
    ) / _MILLION
    return cost.quantize(QUANTUM)


def estimate_cost(price: Price, input_tokens: int, max_output_tokens: int) -> Decimal:
    """The most a call can cost: every input token uncached, the full output cap used."""
    return ((input_tokens * price.input + max_output_tokens * price.output) / _MILLION).quantize(QUANTUM)
