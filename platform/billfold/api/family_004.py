"""The edge of document 004's routes: snake_case, major units as JSON numbers, upper-case currencies.

Document 004's product counts money in major units (``40.88`` euros). Billfold keeps integer minor
units: this module is the one place where the family's amounts are converted, both ways. In, an
amount is the raw JSON token, checked before any conversion (``billfold.money``). Out, a minor-unit
integer divided by the currency's scale is exact as a JSON number for every amount Billfold holds
(at most 2^53 - 1 minor units: a float's shortest repr prints the decimal digits back).
Its errors are ``{error: <code>, message, details: [...]}`` plus Billfold's ``trackingId``; a 402
for money is ``{error: "insufficient_balance", message, balance, required_amount, topup_url}``.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from billfold.fields import CurrencyCode, ProviderId
from billfold.money import major_token_to_minor

FAMILY = "004"
OPT = {"family": FAMILY}
"""Put on a route (``opt=OPT``) or controller: its errors take this family's envelope."""

MajorAmount = Annotated[
    float,
    msgspec.Meta(
        ge=0,
        description="Major units as a JSON number (10.5 = €10.50): no exponent, "
        "at most the currency's decimals.",
    ),
]


def major(cents: int, minor_units: int = 2) -> float:
    """Minor units → a JSON number in major units (1050 → 10.5)."""
    return cents / 10**minor_units if minor_units else float(cents)


def major_or_none(cents: int | None, minor_units: int = 2) -> float | None:
    return None if cents is None else major(cents, minor_units)


def currency_code(code: str) -> str:
    return code.upper()


class _RawAmounts(msgspec.Struct):
    """The raw JSON tokens of a body's amount fields, read before any conversion."""

    amount: msgspec.Raw = msgspec.Raw(b"")
    trigger_threshold: msgspec.Raw = msgspec.Raw(b"")
    reload_amount: msgspec.Raw = msgspec.Raw(b"")
    monthly_limit: msgspec.Raw = msgspec.Raw(b"")
    low_balance_threshold: msgspec.Raw = msgspec.Raw(b"")


def minor_from_body(body: bytes, field: str, minor_units: int = 2) -> int | None:
    """The body's ``field`` (a plain JSON number in major units) in minor units; None when the
    field is absent or null."""
    token = bytes(getattr(msgspec.json.decode(body, type=_RawAmounts), field))
    if not token or token == b"null":
        return None
    return major_token_to_minor(token, minor_units, field=field)


def error_body(code: str, message: str, tracking_id: str, details: list[dict[str, Any]]) -> dict[str, Any]:
    return {"error": code, "message": message, "details": details, "trackingId": tracking_id}


def insufficient_body(
    message: str, tracking_id: str, *, balance: float, required: float, topup_url: str | None
) -> dict[str, Any]:
    return {
        "error": "insufficient_balance",
        "message": message,
        "balance": balance,
        "required_amount": required,
        "topup_url": topup_url,
        "trackingId": tracking_id,
    }


# -- wire shapes ---------------------------------------------------------------------------------


class Balance(msgspec.Struct):
    """free = spendable, reserved = held for in-flight operations, total = free + reserved."""

    free: float
    reserved: float
    total: float
    currency: str


class MajorTopUpRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    amount: MajorAmount
    currency: CurrencyCode | None = None
    payment_method_id: ProviderId | None = None


class TopUp(msgspec.Struct):
    id: str
    status: str
    amount: float
    currency: str
    client_secret: str | None
    balance: Balance


class AutoReload(msgspec.Struct):
    enabled: bool
    trigger_threshold: float
    reload_amount: float
    monthly_limit: float | None
    """Billfold's extension: auto-reload spend per calendar month (null: none)."""
    currency: str


class AutoReloadUpdate(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    trigger_threshold: MajorAmount | msgspec.UnsetType = msgspec.UNSET
    reload_amount: MajorAmount | msgspec.UnsetType = msgspec.UNSET
    monthly_limit: MajorAmount | msgspec.UnsetType | None = msgspec.UNSET


class UsageBalance(msgspec.Struct):
    free: float
    reserved: float
    total: float


class UsageBilling(msgspec.Struct):
    """The inline billing object of an accepted send."""

    channel: str
    message_type: str | None
    hold_amount: float
    """Held for a reserved send (0 once charged)."""
    message_price: float
    """What this send costs (charged, or held while reserved)."""
    balance: UsageBalance
    tier: dict[str, Any] | None


class UsageAccepted(msgspec.Struct):
    usage_id: str
    event_id: str
    status: str
    billing: UsageBilling


def usage_billing(
    *,
    channel: str,
    message_type: str | None,
    amount_cents: int,
    reserved: bool,
    free: int,
    reserved_cents: int,
    total: int,
    tier: dict[str, Any] | None,
    minor_units: int,
) -> UsageBilling:
    return UsageBilling(
        channel=channel,
        message_type=message_type,
        hold_amount=major(amount_cents if reserved else 0, minor_units),
        message_price=major(amount_cents, minor_units),
        balance=UsageBalance(
            free=major(free, minor_units),
            reserved=major(reserved_cents, minor_units),
            total=major(total, minor_units),
        ),
        tier=tier,
    )


class ChannelUsage(msgspec.Struct):
    channel: str
    quantity: int
    """Billed units (minutes for calls)."""
    amount: float
    tier: dict[str, Any] | None


class MonthUsage(msgspec.Struct):
    month: str
    currency: str
    channels: list[ChannelUsage]


class UsageRow(msgspec.Struct):
    key: str
    quantity: int
    amount: float


class DetailedUsage(msgspec.Struct, rename={"from_": "from"}):
    from_: str
    to: str
    group_by: str
    currency: str
    rows: list[UsageRow]
