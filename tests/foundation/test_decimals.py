"""services/common/decimals.py: the shortcuts for plain text agree with the full checks."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import example, given
from hypothesis import strategies as st

from services.common.decimals import parse_checked, parse_decimal, to_text

# decimal-looking text around the decimal(38,18) limits, and anything else
NUMBER_TEXT = st.one_of(
    st.from_regex(r"[-+]?[0-9]{0,23}(\.[0-9]{0,21})?([eE][-+]?[0-9]{1,2})?", fullmatch=True),
    st.text(max_size=30),
)


def _outcome(parse, text: str) -> tuple[str, str]:
    try:
        value = parse(text)
    except ValueError as exc:
        return ("error", type(exc).__name__)
    return ("value", repr(value))  # the digits and the exponent, not only the number


@given(NUMBER_TEXT)
@example("1" * 20)
@example("1" * 21)
@example("0." + "1" * 18)
@example("0." + "1" * 19)
@example("00000000000000000000001")
@example("١٢")  # Unicode digits: Decimal takes them, the shortcut leaves them to the checks
def test_parse_decimal_agrees_with_the_full_checks(text: str) -> None:
    assert _outcome(parse_decimal, text) == _outcome(parse_checked, text)


def _reference_text(value: Decimal) -> str:
    """to_text as first written: format 'f', then the trailing zeros dropped."""
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


@given(st.decimals(allow_nan=False, allow_infinity=False))
@example(Decimal("-0"))
@example(Decimal("-0.000"))
@example(Decimal("0E+5"))
@example(Decimal("0E-30"))
@example(Decimal("1E+3"))
@example(Decimal("1.5E-7"))
@example(Decimal("-120.500"))
def test_to_text_is_plain_and_normalized(value: Decimal) -> None:
    assert to_text(value) == _reference_text(value)
    assert "E" not in to_text(value)
    assert Decimal(to_text(value)) == value
