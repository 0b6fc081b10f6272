"""Wire shapes of the usage routes (Billfold's own: snake_case, minor units)."""

from __future__ import annotations

import datetime
import uuid
from typing import Annotated, Any, Literal

import msgspec

from billfold.fields import NO_NUL, ExternalId, Metadata, PhoneNumber

MAX_QUANTITY = 10**9
"""Units (or seconds) in one event: a billion keeps every amount far inside a bigint."""

Quantity = Annotated[
    int, msgspec.Meta(ge=0, le=MAX_QUANTITY, description="Units (seconds on a time-billed channel).")
]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
"""A channel, message type or category name."""
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=NO_NUL)]
ClientId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=NO_NUL)]


class UsageIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One usage event. ``event_id`` is unique per organization: a repeat is answered from the first."""

    channel: Token
    quantity: Quantity
    event_id: EventId
    message_type: Token | None = None
    category: Token | None = None
    occurred_at: datetime.datetime | None = None
    subscriber_id: ClientId | None = None
    agent_id: ClientId | None = None
    session_id: ClientId | None = None
    metadata: Metadata = {}
    call_id: ExternalId | None = None
    phone_number_id: ExternalId | None = None
    phone_number_value: PhoneNumber | None = None
    reserve: bool = False
    """Two-phase send (document 004): hold the price now, settle later."""


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    events: Annotated[list[UsageIn], msgspec.Meta(min_length=1, max_length=1000)]


class SettleIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    outcome: Literal["delivered", "failed"]
    quantity: Quantity | None = None
    """Delivered units (at most the reserved quantity); the rest of the hold returns."""


class UsageBalance(msgspec.Struct):
    free: int
    reserved: int
    total: int


class UsageBilling(msgspec.Struct, kw_only=True):
    channel: str
    message_type: str | None
    quantity: int
    billed_quantity: int
    unit_price: str
    """Exact decimal, minor units per billed unit ("0.79")."""
    amount_cents: int
    """Charged (or held, while reserved)."""
    currency: str
    balance: UsageBalance
    tier: dict[str, Any] | None


class UsageOut(msgspec.Struct, kw_only=True):
    usage_id: uuid.UUID
    event_id: str
    status: str
    entry: dict[str, Any] | None
    """The ledger entry that moved the money (a transaction object), or null for a free send."""
    hold_id: uuid.UUID | None
    billing: UsageBilling
    occurred_at: datetime.datetime | None
    created_at: datetime.datetime


class BatchResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    event_id: str
    status: Literal["accepted", "replayed", "refused"]
    code: str | None = None
    message: str | None = None
    billing: dict[str, Any] | None = None
    usage_id: uuid.UUID | None = None


class BatchOut(msgspec.Struct):
    results: list[BatchResult]


class PlanOut(msgspec.Struct, kw_only=True):
    org_id: uuid.UUID
    message_step: str
    budget_step: str
    anniversary: datetime.date
    allow_overage: bool
    messages_cap: int | None
    cost_cap: int | None
    sms_cap: int | None
    call_cap: int | None
    pending_message_step: str | None
    pending_budget_step: str | None
    pending_effective: datetime.date | None
    cycle_start: datetime.date
    cycle_end: datetime.date
    counters: dict[str, int]
