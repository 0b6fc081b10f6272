"""Wire shapes of the ledger routes (field names follow the API documents)."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import msgspec

from billfold.fields import Amount, Description, ExternalId, Metadata, NonNegativeAmount, PhoneNumber, Seconds
from billfold.ledger.rows import AccountRow, EntryRow, HoldRow
from billfold.money import format_minor


class ChargeIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_cents: Amount
    description: Description = ""
    metadata: Metadata = {}
    call_id: ExternalId | None = None
    phone_number_id: ExternalId | None = None
    phone_number_value: PhoneNumber | None = None


class HoldIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_cents: Amount
    expires_in_seconds: Seconds | None = None
    description: Description = ""
    metadata: Metadata = {}


class CaptureIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    amount_cents: NonNegativeAmount | None = None
    description: Description | None = None


class Transaction(msgspec.Struct):
    """The transaction object of the billing documents (amount negative for debits)."""

    id: int
    kind: str
    description: str
    amount_cents: int
    amount_usd: str
    currency: str
    balance_after_cents: int
    reserved_delta_cents: int
    call_id: int | None
    phone_number_id: int | None
    phone_number_value: str | None
    hold_id: uuid.UUID | None
    metadata: dict[str, Any]
    created_at: datetime.datetime


class Balance(msgspec.Struct):
    """free = spendable, reserved = held for in-flight operations, total = free + reserved (minor units)."""

    free: int
    reserved: int
    total: int
    currency: str


class HoldOut(msgspec.Struct):
    id: uuid.UUID
    amount_cents: int
    captured_cents: int | None
    status: str
    description: str
    metadata: dict[str, Any]
    expires_at: datetime.datetime
    created_at: datetime.datetime
    finalized_at: datetime.datetime | None


class ChargeOut(msgspec.Struct):
    transaction: Transaction
    balance: Balance


class HoldResult(msgspec.Struct):
    hold: HoldOut
    balance: Balance
    transaction: Transaction


class TransactionPage(msgspec.Struct):
    data: list[Transaction]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int | None = None
    total: int | None = None


class CreditsOut(msgspec.Struct, rename="camel"):
    organization_id: uuid.UUID
    currency: str
    balance_cents: int
    reserved_cents: int
    total_cents: int


class CreditHistoryItem(msgspec.Struct, rename="camel"):
    id: int
    kind: str
    amount_cents: int
    balance_after_cents: int
    description: str
    metadata: dict[str, Any]
    created_at: datetime.datetime


class CreditHistoryPage(msgspec.Struct, rename="camel"):
    items: list[CreditHistoryItem]
    next_cursor: str | None
    has_more: bool


def to_transaction(entry: EntryRow, currency: str, minor_units: int = 2) -> Transaction:
    return Transaction(
        id=entry.id,
        kind=entry.kind,
        description=entry.description,
        amount_cents=entry.amount_cents,
        amount_usd=format_minor(entry.amount_cents, minor_units),
        currency=currency,
        balance_after_cents=entry.free_after_cents,
        reserved_delta_cents=entry.reserved_delta_cents,
        call_id=entry.call_id,
        phone_number_id=entry.phone_number_id,
        phone_number_value=entry.phone_number_value,
        hold_id=entry.hold_id,
        metadata=entry.metadata,
        created_at=entry.created_at,
    )


def to_balance(account: AccountRow) -> Balance:
    return Balance(
        free=account.free_cents,
        reserved=account.reserved_cents,
        total=account.total_cents,
        currency=account.currency,
    )


def to_hold(hold: HoldRow) -> HoldOut:
    return HoldOut(
        id=hold.id,
        amount_cents=hold.amount_cents,
        captured_cents=hold.captured_cents,
        status=hold.status,
        description=hold.description,
        metadata=hold.metadata,
        expires_at=hold.expires_at,
        created_at=hold.created_at,
        finalized_at=hold.finalized_at,
    )
