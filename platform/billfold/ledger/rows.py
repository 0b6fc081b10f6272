"""What the ledger's tables hold, as immutable rows (accounts, entries, holds), and their mapping."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import msgspec

from billfold.db import table_of
from billfold.ledger.models import Account, Entry, Hold

accounts = table_of(Account)
entries = table_of(Entry)
holds = table_of(Hold)


class AccountRow(msgspec.Struct, frozen=True):
    """An organization's balances, in minor units: free (spendable), reserved (held), their total."""

    org_id: uuid.UUID
    currency: str
    free_cents: int
    reserved_cents: int
    overage_limit_cents: int
    watch_below_cents: int | None = None
    """The highest watched level at or below the free balance: a write ending below it crosses it."""
    watch_above_cents: int | None = None
    """The lowest watched level above the free balance: a write ending at or above it crosses it."""

    @property
    def total_cents(self) -> int:
        return self.free_cents + self.reserved_cents


class EntryRow(msgspec.Struct, frozen=True):
    """One immutable ledger entry. ``amount_cents`` changes the total, ``reserved_delta_cents`` the
    reserved balance; the free balance moved by their difference."""

    id: int
    org_id: uuid.UUID
    kind: str
    amount_cents: int
    reserved_delta_cents: int
    free_after_cents: int
    reserved_after_cents: int
    description: str
    metadata: dict[str, Any]
    call_id: int | None
    phone_number_id: int | None
    phone_number_value: str | None
    hold_id: uuid.UUID | None
    reference: str | None
    created_at: datetime.datetime

    @property
    def free_delta_cents(self) -> int:
        return self.amount_cents - self.reserved_delta_cents

    @property
    def free_before_cents(self) -> int:
        return self.free_after_cents - self.free_delta_cents


class HoldRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    org_id: uuid.UUID
    amount_cents: int
    captured_cents: int | None
    status: str
    description: str
    metadata: dict[str, Any]
    expires_at: datetime.datetime
    created_at: datetime.datetime
    finalized_at: datetime.datetime | None


class Posted(msgspec.Struct, frozen=True):
    """An entry just written and the account after it."""

    entry: EntryRow
    account: AccountRow


class EntryPage(msgspec.Struct, frozen=True):
    entries: list[EntryRow]
    total: int | None
    next_cursor: str | None


ACCOUNT_COLUMNS = (
    accounts.c.org_id,
    accounts.c.currency,
    accounts.c.free_cents,
    accounts.c.reserved_cents,
    accounts.c.overage_limit_cents,
    accounts.c.watch_below_cents,
    accounts.c.watch_above_cents,
)
ENTRY_COLUMNS = (
    entries.c.id,
    entries.c.org_id,
    entries.c.kind,
    entries.c.amount_cents,
    entries.c.reserved_delta_cents,
    entries.c.free_after_cents,
    entries.c.reserved_after_cents,
    entries.c.description,
    entries.c.metadata,
    entries.c.call_id,
    entries.c.phone_number_id,
    entries.c.phone_number_value,
    entries.c.hold_id,
    entries.c.reference,
    entries.c.created_at,
)
HOLD_COLUMNS = (
    holds.c.id,
    holds.c.org_id,
    holds.c.amount_cents,
    holds.c.captured_cents,
    holds.c.status,
    holds.c.description,
    holds.c.metadata,
    holds.c.expires_at,
    holds.c.created_at,
    holds.c.finalized_at,
)


def as_utc(value: datetime.datetime) -> datetime.datetime:
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def entry_row(row: Any) -> EntryRow:
    return EntryRow(
        id=row.id,
        org_id=row.org_id,
        kind=row.kind,
        amount_cents=row.amount_cents,
        reserved_delta_cents=row.reserved_delta_cents,
        free_after_cents=row.free_after_cents,
        reserved_after_cents=row.reserved_after_cents,
        description=row.description,
        metadata=row.metadata or {},
        call_id=row.call_id,
        phone_number_id=row.phone_number_id,
        phone_number_value=row.phone_number_value,
        hold_id=row.hold_id,
        reference=row.reference,
        created_at=as_utc(row.created_at),
    )


def hold_row(row: Any) -> HoldRow:
    return HoldRow(
        id=row.id,
        org_id=row.org_id,
        amount_cents=row.amount_cents,
        captured_cents=row.captured_cents,
        status=row.status,
        description=row.description,
        metadata=row.metadata or {},
        expires_at=as_utc(row.expires_at),
        created_at=as_utc(row.created_at),
        finalized_at=as_utc(row.finalized_at) if row.finalized_at else None,
    )
