"""The units the Redis scripts take: whole milliseconds and whole picodollars (1e-12 USD)."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

PICO = Decimal(10) ** 12


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds, at least 1: Redis refuses ``PX 0``, and ``PEXPIRE 0`` deletes the key."""
    return max(1, int(seconds * 1000))


def to_pico(cost: Decimal) -> int:
    """Dollars to whole picodollars (costs are quantized far coarser; a finer one is rounded up)."""
    return int((cost * PICO).to_integral_value(ROUND_CEILING))


def from_pico(pico: int | str) -> Decimal:
    return Decimal(int(pico)) / PICO
