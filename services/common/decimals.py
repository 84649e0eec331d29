"""Exact money arithmetic: every price and quantity is a Decimal, stored as decimal(38,18).

Rules shared by every service (so a recomputation anywhere gives the same digits):
- a value parsed from a frame keeps its digits; it is rejected when it does not fit
  decimal(38,18) (more than 18 fractional or 20 integer digits);
- quote_quantity = price × quantity, rounded half-even to 18 places, computed once in
  the normalizer; sums of quantized values are exact;
- vwap = quote_volume / volume, rounded half-even to 18 places.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

SCALE = 18
PRECISION = 38
QUANTUM = Decimal(1).scaleb(-SCALE)  # 1E-18
MAX_INTEGER_DIGITS = PRECISION - SCALE
# Wide enough that products and sums of decimal(38,18) values never round before quantize().
EXACT = Context(prec=100, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation])
# Plain ASCII decimal text that fits decimal(38,18) by its shape: no range checks needed. Nearly every
# price and quantity an exchange sends looks like this (tests/foundation/test_decimals.py checks that the
# shortcut agrees with parse_checked).
_FITS = re.compile(rf"[0-9]{{1,{MAX_INTEGER_DIGITS}}}(?:\.[0-9]{{1,{SCALE}}})?")


class DecimalRangeError(ValueError):
    """A value does not fit decimal(38,18) exactly."""


def parse_decimal(text: str) -> Decimal:
    """Parse decimal text exactly; raise ValueError for anything that is not a finite decimal(38,18)."""
    if isinstance(text, str) and _FITS.fullmatch(text) is not None:
        return Decimal(text)
    return parse_checked(text)


def parse_checked(text: str) -> Decimal:
    """parse_decimal without the shortcut for plain text: every value goes through check_fits."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError) as exc:
        raise ValueError(f"{text!r} is not a decimal number") from exc
    check_fits(value)
    return value


def check_fits(value: Decimal) -> None:
    """Raise DecimalRangeError unless the value is finite and fits decimal(38,18) without rounding."""
    if not value.is_finite():
        raise DecimalRangeError(f"{value} is not finite")
    if value != 0 and value.adjusted() >= MAX_INTEGER_DIGITS:
        raise DecimalRangeError(f"{value} has more than {MAX_INTEGER_DIGITS} integer digits")
    if value != quantize(value):
        raise DecimalRangeError(f"{value} has more than {SCALE} significant fractional digits")


def quantize(value: Decimal) -> Decimal:
    """Round half-even to 18 places (the storage scale)."""
    return value.quantize(QUANTUM, context=EXACT)


def multiply(a: Decimal, b: Decimal) -> Decimal:
    """a × b rounded to 18 places: the quote quantity of a trade."""
    return quantize(EXACT.multiply(a, b))


def add(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.add(a, b)


def divide(a: Decimal, b: Decimal) -> Decimal:
    """a / b rounded to 18 places (vwap)."""
    return quantize(EXACT.divide(a, b))


def to_text(value: Decimal) -> str:
    """Plain (non-scientific) text of a Decimal, normalized: trailing fractional zeros dropped."""
    text = str(value)  # the plain form, unless the exponent is positive or the value is below 1E-6
    if "E" in text:
        if value == 0:
            return "0"
        text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
