"""Exact money: integer micro-dollars inside, JSON numbers outside.

A micro-dollar is the precision the API reports (6 decimals), so every total is the
exact sum of the parts shown with it: summary, per-model and per-bucket costs agree.
"""
from decimal import ROUND_HALF_EVEN, Decimal

MICROS_PER_USD = 10**6


def usd_to_micros(amount: Decimal | int) -> int:
    """Dollars (as sent, parsed as Decimal) to integer micro-dollars, half-even."""
    return int((Decimal(amount) * MICROS_PER_USD).to_integral_value(ROUND_HALF_EVEN))


def micros_to_usd(micros: int) -> float:
    """Micro-dollars to the nearest JSON number (at most 6 decimals).

    Python's int / int is correctly rounded, so this is the float nearest the exact
    decimal, as float(Decimal(micros) / 10**6) is, at a tenth of the cost.
    """
    return micros / MICROS_PER_USD

