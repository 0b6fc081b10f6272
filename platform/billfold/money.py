"""Money helpers: amounts are integers in the currency's minor unit, never floats."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from billfold.errors import ValidationFailed


def format_minor(amount: int, minor_units: int = 2) -> str:
    """12345 → "123.45"; -16 → "-0.16"."""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**minor_units)
    return f"{sign}{whole}.{frac:0{minor_units}d}" if minor_units else f"{sign}{whole}"


def major_to_minor(value: object, minor_units: int = 2, *, field: str = "amount") -> int:
    """Convert a major-unit amount ("10", 10.5, "10.50") to minor units exactly.

    More decimals than the currency has is an error, not a rounding."""
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValidationFailed(f"{field} must be a number", field=field) from None
    if not amount.is_finite():
        raise ValidationFailed(f"{field} must be a finite number", field=field)
    scaled = amount.scaleb(minor_units)
    if scaled != scaled.to_integral_value():
        raise ValidationFailed(f"{field} has more than {minor_units} decimals", field=field)
    return int(scaled)


def round_minor(value: Decimal) -> int:
    """Round a fractional minor-unit amount to an integer (banker's rounding, no drift)."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


_PLAIN_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
MAX_NUMBER_LENGTH = 24
"""A major-unit amount longer than this many characters is refused before it is read."""


def major_token_to_minor(token: bytes, minor_units: int = 2, *, field: str = "amount") -> int:
    """Convert the raw JSON token of a major-unit amount (``10.50``) to minor units exactly.

    The token must be a plain JSON number — not a string, no exponent — of at most
    MAX_NUMBER_LENGTH characters (checked first, before any conversion), with at most the
    currency's decimals."""
    token = token.strip()
    if len(token) > MAX_NUMBER_LENGTH:
        raise ValidationFailed(f"{field} is too long: at most {MAX_NUMBER_LENGTH} characters", field=field)
    if not _PLAIN_NUMBER.fullmatch(token):
        raise ValidationFailed(
            f"{field} must be a JSON number in major units without exponent (e.g. 10.50)", field=field
        )
    return major_to_minor(token.decode(), minor_units, field=field)
