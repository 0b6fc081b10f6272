"""Ledger tables: one account row per organization, append-only entries, holds, idempotency records.

The account row is a cache of its entries that is updated in the same transaction as each insert;
`billfold ledger verify` proves the two agree.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from advanced_alchemy.base import DefaultBase, IdentityBase, UUIDv7Base
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db import JsonDict, utcnow

ENTRY_KINDS = ("credit", "debit", "adjustment", "refund", "hold", "capture", "release")
"""credit/debit/adjustment/refund move the total; hold moves free → reserved; capture spends
reserved money; release returns reserved money to free (on release, expiry or partial capture)."""


class Account(DefaultBase):
    __tablename__ = "ledger_accounts"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    currency: Mapped[str] = mapped_column(String(3))
    free_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    overage_limit_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    """How far below zero `free` may go (0 = no overage)."""
    watch_levels: Mapped[list[int]] = mapped_column(JsonDict, default=list)
    """Free-balance levels the plugins watch (``billfold_balance_levels``), highest first."""
    watch_below_cents: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """The highest watched level at or below the free balance: a write ending below it crosses it
    downward. Kept with the balance, so a charge that crosses nothing needs no other read."""
    watch_above_cents: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """The lowest watched level above the free balance: a write reaching it crosses it upward."""
    entry_count: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


class Entry(IdentityBase):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_org_id_id", "org_id", "id"),
        Index(
            "uq_ledger_entries_org_reference",
            "org_id",
            "reference",
            unique=True,
            sqlite_where=text("reference IS NOT NULL"),
            postgresql_where=text("reference IS NOT NULL"),
        ),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    """Change of the total balance (negative for debits and captures, 0 for holds and releases)."""
    reserved_delta_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    """Change of the reserved balance; the free balance changed by amount - reserved_delta."""
    free_after_cents: Mapped[int] = mapped_column(BigInteger)
    reserved_after_cents: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str] = mapped_column(String(500), default="")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JsonDict, default=dict)
    call_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    phone_number_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    phone_number_value: Mapped[str | None] = mapped_column(String(32), default=None)
    hold_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    reference: Mapped[str | None] = mapped_column(String(200), default=None)
    """Unique per organization when set: the thing this entry accounts for (e.g. `payment:pi_123`),
    so the same money can never be booked twice."""
    created_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


class Hold(UUIDv7Base):
    __tablename__ = "ledger_holds"
    __table_args__ = (Index("ix_ledger_holds_status_expires_at", "status", "expires_at"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    captured_cents: Mapped[int | None] = mapped_column(BigInteger, default=None)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending → captured | released | expired, exactly once."""
    description: Mapped[str] = mapped_column(String(500), default="")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JsonDict, default=dict)
    expires_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True))
    created_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    finalized_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class IdempotencyRecord(DefaultBase):
    __tablename__ = "idempotency_keys"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer, default=0)
    response_body: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    created_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
