"""The edge of document 002's routes: camelCase, decimillicents, UUID ids, tagged errors.

Document 002's product counts money in decimillicents (1 cent = 100,000; $1 = 10,000,000: its own
``DECIMILLICENTS_PER_CENT`` and ``DECIMILLICENTS_PER_DOLLAR``). Billfold keeps integer minor units:
this module is the one place where the family's amounts are converted, both ways. An amount that is
not a whole number of cents is refused (400) on the way in, and never produced on the way out.
Its errors are the product's tagged errors, ``{_tag, message}``, plus Billfold's ``trackingId``.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Annotated, Any

import msgspec

from billfold.errors import ValidationFailed
from billfold.fields import MAX_AMOUNT

FAMILY = "002"
OPT = {"family": FAMILY}
"""Put on a route (``opt=OPT``) or controller: its errors take this family's envelope."""

DECIMILLICENTS_PER_CENT = 100_000
DECIMILLICENTS_PER_DOLLAR = 10_000_000
MAX_DECIMILLICENTS = MAX_AMOUNT * DECIMILLICENTS_PER_CENT

Decimillicents = Annotated[
    int,
    msgspec.Meta(
        ge=0,
        le=2**63 - 1,
        multiple_of=DECIMILLICENTS_PER_CENT,
        description="Decimillicents (1 cent = 100,000): a whole number of cents.",
    ),
]

PositiveDecimillicents = Annotated[
    int,
    msgspec.Meta(
        ge=DECIMILLICENTS_PER_CENT,
        le=2**63 - 1,
        multiple_of=DECIMILLICENTS_PER_CENT,
        description="Decimillicents (1 cent = 100,000): a whole, positive number of cents.",
    ),
]

TAGS = {
    400: "BadRequest",
    401: "Unauthorized",
    402: "PaymentRequired",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    413: "BadRequest",
    415: "BadRequest",
    422: "BadRequest",
    429: "TooManyRequests",
}
DECODE_TAG = "HttpApiDecodeError"


def to_decimillicents(cents: int) -> int:
    return cents * DECIMILLICENTS_PER_CENT


def to_decimillicents_or_none(cents: int | None) -> int | None:
    return None if cents is None else cents * DECIMILLICENTS_PER_CENT


def to_cents(value: int, field: str) -> int:
    """Decimillicents → cents; not a whole number of cents is 400 naming the field."""
    cents, rest = divmod(value, DECIMILLICENTS_PER_CENT)
    if rest:
        raise ValidationFailed(
            f"{field} must be a whole number of cents (a multiple of {DECIMILLICENTS_PER_CENT})",
            code="not_whole_cents",
            field=field,
        )
    return cents


_ENTRY_ID_PREFIX = 0xB111F01D_0002_7000
"""A credit-history item's id is a UUID that carries the ledger entry id in its low 64 bits."""


CURSOR_PATTERN = r"^b111f01d-0002-7000-[0-7][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
"""What every item id (and so every cursor) looks like; anything else is 400."""


def entry_uuid(entry_id: int) -> uuid.UUID:
    return uuid.UUID(int=(_ENTRY_ID_PREFIX << 64) | entry_id)


def entry_id_of(cursor: str, field: str = "cursor") -> int:
    """The ledger entry id a cursor (an item's UUID) points at; anything else is 400."""
    try:
        value = uuid.UUID(cursor).int
    except (ValueError, AttributeError):
        raise ValidationFailed(f"{field} is not a cursor returned by this API", field=field) from None
    if value >> 64 != _ENTRY_ID_PREFIX:
        raise ValidationFailed(f"{field} is not a cursor returned by this API", field=field)
    return value & (2**64 - 1)


def lenient_limit(value: str | None, *, default: int = 50, low: int = 1, high: int = 100) -> int:
    """The product's limit: missing or unparseable is the default; any number is clamped."""
    try:
        limit = int(value) if value is not None else default
    except ValueError:
        return default
    return max(low, min(high, limit))


ENTRY_TYPES = ("purchase", "usage", "adjustment", "refund", "auto_recharge", "reserve", "release")


def entry_type(kind: str, metadata: dict[str, Any]) -> str:
    """Billfold's entry kinds in the product's words."""
    if kind == "credit":
        return "auto_recharge" if metadata.get("purpose") == "auto_reload" else "purchase"
    return {
        "debit": "usage",
        "capture": "usage",
        "hold": "reserve",
        "release": "release",
        "adjustment": "adjustment",
        "refund": "refund",
    }.get(kind, "adjustment")


def error_body(
    status: int, message: str, tracking_id: str, issues: list[dict[str, Any]] | None
) -> dict[str, Any]:
    if issues is not None:
        return {"_tag": DECODE_TAG, "issues": issues, "message": message, "trackingId": tracking_id}
    return {"_tag": TAGS.get(status, "InternalError"), "message": message, "trackingId": tracking_id}


# -- wire shapes ---------------------------------------------------------------------------------


class _Camel(msgspec.Struct, rename="camel"):
    pass


class _CamelIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    pass


class BillingSettings(_Camel):
    """The product's BillingSettings (null where Billfold has no such fact)."""

    organization_id: uuid.UUID
    billing_email: str | None
    stripe_customer_id: str | None
    stripe_subscription_id: str | None
    stripe_payment_method_id: str | None
    stripe_metered_subscription_item_id: str | None
    credits_balance_decimillicents: int
    reserved_credits_decimillicents: int
    auto_recharge_enabled: bool
    auto_recharge_threshold_decimillicents: int | None
    auto_recharge_amount_decimillicents: int | None
    usage_cap_decimillicents: int | None
    is_subscribed: bool
    subscription_status: str | None
    subscription_plan: str | None
    subscription_started_at: datetime.datetime | None
    subscription_ends_at: datetime.datetime | None
    subscription_current_period_end: datetime.datetime | None
    suspended_at: datetime.datetime | None
    payment_grace_period_ends_at: datetime.datetime | None


Email = Annotated[str, msgspec.Meta(max_length=254, pattern=r"^[^@\s\x00]+@[^@\s\x00]+$")]


class BillingSettingsPatch(_CamelIn, frozen=True):
    """Absent keeps, null clears."""

    billing_email: Email | msgspec.UnsetType | None = msgspec.UNSET
    auto_recharge_enabled: bool | msgspec.UnsetType = msgspec.UNSET
    auto_recharge_threshold_decimillicents: Decimillicents | msgspec.UnsetType | None = msgspec.UNSET
    auto_recharge_amount_decimillicents: PositiveDecimillicents | msgspec.UnsetType | None = msgspec.UNSET
    usage_cap_decimillicents: Decimillicents | msgspec.UnsetType | None = msgspec.UNSET


class Credits(_Camel):
    credits_balance_decimillicents: int
    reserved_credits_decimillicents: int
    available_decimillicents: int
    is_suspended: bool
    suspended_at: datetime.datetime | None
    payment_grace_period_ends_at: datetime.datetime | None


class CreditHistoryItem(_Camel):
    id: uuid.UUID
    entry_type: str
    amount_decimillicents: int
    reason: str | None
    reference_id: str | None
    balance_after: int
    created_at: datetime.datetime


class CreditHistory(_Camel):
    items: list[CreditHistoryItem]
    cursor: str | None
    has_more: bool


class RequiresAction(_Camel):
    attempt_id: str
    amount_decimillicents: int
    stripe_payment_intent_id: str
    client_secret: str | None


Url = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://[!-~]+$(?!\n)")]
PlanName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class CheckoutRequest(_CamelIn, frozen=True):
    organization_id: Annotated[str, msgspec.Meta(max_length=64)]
    subscription_plan: PlanName
    success_url: Url
    cancel_url: Url


class PortalRequest(_CamelIn, frozen=True):
    organization_id: Annotated[str, msgspec.Meta(max_length=64)]
    return_url: Url


class HostedTopUpRequest(_CamelIn, frozen=True):
    amount_decimillicents: Annotated[
        int, msgspec.Meta(ge=DECIMILLICENTS_PER_CENT, le=2**63 - 1, multiple_of=DECIMILLICENTS_PER_CENT)
    ]
    success_url: Url
    cancel_url: Url


class HostedSession(_Camel):
    id: str
    url: str


class CompleteLocalRequest(_CamelIn, frozen=True):
    session_id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    payment_intent_id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None


class WebhookAnswer(_Camel):
    processed: bool
    idempotent: bool
    event_id: str


PRODUCT_CATEGORIES = (
    "text_generation",
    "image_generation",
    "video_generation",
    "storage",
    "openrouter_inference",
    "workflow_execution",
    "api_call",
)
"""The product's usage categories (the last three are its legacy ones)."""
MAX_USAGE_WINDOW_DAYS = 92


class UsageReport(_Camel):
    organization_id: uuid.UUID
    category: str
    period_start: str
    period_end: str
    total_quantity: int
    total_cost_decimillicents: int


class NoCapReminder(_Camel):
    dismissed: bool
    usage_cap_set: bool
    """Billfold's addition: whether a spend cap is set (a client shows the reminder while neither)."""
