"""Cost of one provider call from the price table, exact to the cent (Decimal, not float)."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from router.dispatch._config import Price
from router.providers import Usage

_MILLION = Decimal(1_000_000)
# Stored and summed at this precision; far below a cent, so totals add up exactly.
QUANTUM = Decimal("0.0000000001")


def max_input_price(price: Price) -> Decimal:
    """The dearest an input token can be: plain, read from the cache, or written to it (Anthropic: 1.25x)."""
    return max(price.input, price.cached, price.write)


def call_cost(price: Price, usage: Usage) -> Decimal:
    # Estimated usage (no usage block) cannot tell cache hits or writes apart: the dearest price then.
    input_price = max_input_price(price) if usage.estimated else price.input
    cost = (
        usage.input_tokens * input_price
        + usage.cached_input_tokens * price.cached
        + usage.cache_write_tokens * price.write
        + usage.output_tokens * price.output
    ) / _MILLION
    return cost.quantize(QUANTUM)


def max_call_cost(price: Price, max_input_tokens: int, max_output_tokens: int) -> Decimal:
    """The most a call can cost: every input token at the dearest input price (a cache write costs
    more than a plain input token), the full output cap used. Rounded up, so it is never below."""
    cost = (max_input_tokens * max_input_price(price) + max_output_tokens * price.output) / _MILLION
    return cost.quantize(QUANTUM, rounding=ROUND_CEILING)
