"""Invoice tables: each organization's billing details, the number counters, finalized invoices and
their lines, and the stored PDF of each.

A finalized invoice and its lines are never updated, except that an invoice may be voided (status,
voided_at, void_reason); the PDF table holds the rendered document."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from advanced_alchemy.base import DefaultBase, UUIDv7Base
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db import JsonDict, utcnow

INVOICE_STATUSES = ("finalized", "void")
LINE_KINDS = ("usage", "charge")
"""What an invoice bills: priced usage (by channel, message type and unit price) and direct charges
(by description). Payments, adjustments and refunds are the statement's, not billed lines."""


class BillingDetails(DefaultBase):
    """Who an organization's invoices are made out to (copied into each invoice at finalization)."""

    __tablename__ = "billing_details"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    legal_name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(1000), default="")
    """Lines separated by newlines."""
    country: Mapped[str | None] = mapped_column(String(2), default=None)
    vat_id: Mapped[str | None] = mapped_column(String(32), default=None)
    email: Mapped[str | None] = mapped_column(String(254), default=None)
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


class InvoiceCounter(DefaultBase):
    """The last number given in a series (the prefix) and year: incremented inside the finalizing
    transaction, so a number is taken only when its invoice commits (gapless) and never twice."""

    __tablename__ = "invoice_counters"

    series: Mapped[str] = mapped_column(String(16), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last: Mapped[int] = mapped_column(BigInteger, default=0)


class Invoice(UUIDv7Base):
    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("series", "year", "sequence", name="uq_invoices_series_year_sequence"),
        UniqueConstraint("number", name="uq_invoices_number"),
        Index("ix_invoices_org_id_id", "org_id", "id"),
        Index(
            "uq_invoices_org_period_finalized",
            "org_id",
            "period",
            unique=True,
            sqlite_where=text("status = 'finalized'"),
            postgresql_where=text("status = 'finalized'"),
        ),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(40))
    series: Mapped[str] = mapped_column(String(16))
    year: Mapped[int] = mapped_column(Integer)
    sequence: Mapped[int] = mapped_column(BigInteger)
    period: Mapped[str] = mapped_column(String(7))
    period_start: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True))
    period_end: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True))
    """Exclusive: the first instant of the next month."""
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default="finalized")
    opening_cents: Mapped[int] = mapped_column(BigInteger)
    """The total balance (free + reserved) when the period began."""
    opening_reserved_cents: Mapped[int] = mapped_column(BigInteger)
    payments_cents: Mapped[int] = mapped_column(BigInteger)
    adjustments_cents: Mapped[int] = mapped_column(BigInteger)
    """Signed: operator credits minus operator debits."""
    refunds_cents: Mapped[int] = mapped_column(BigInteger)
    closing_cents: Mapped[int] = mapped_column(BigInteger)
    closing_reserved_cents: Mapped[int] = mapped_column(BigInteger)
    subtotal_cents: Mapped[int] = mapped_column(BigInteger)
    """The total less the tax it contains."""
    tax_cents: Mapped[int] = mapped_column(BigInteger)
    total_cents: Mapped[int] = mapped_column(BigInteger)
    """What the period's usage and direct charges took from the balance (tax included)."""
    tax_rate: Mapped[str] = mapped_column(String(16))
    """Percent, exact decimal text."""
    statement: Mapped[dict[str, Any]] = mapped_column(JsonDict, default=dict)
    """Payments, adjustments and refunds by description: {kind: [{description, count, amount_cents}]}."""
    customer: Mapped[dict[str, Any]] = mapped_column(JsonDict, default=dict)
    operator: Mapped[dict[str, Any]] = mapped_column(JsonDict, default=dict)
    issued_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True))
    voided_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    void_reason: Mapped[str | None] = mapped_column(String(500), default=None)


class InvoiceLine(DefaultBase):
    __tablename__ = "invoice_lines"

    invoice_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("invoices.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str | None] = mapped_column(String(64), default=None)
    message_type: Mapped[str | None] = mapped_column(String(64), default=None)
    unit: Mapped[str | None] = mapped_column(String(32), default=None)
    description: Mapped[str] = mapped_column(String(500), default="")
    quantity: Mapped[int] = mapped_column(BigInteger)
    """Billed units (usage) or the number of charges (a direct-charge line)."""
    unit_price: Mapped[str | None] = mapped_column(String(40), default=None)
    """The exact price of one unit in minor units, as charged (usage lines)."""
    amount_cents: Mapped[int] = mapped_column(BigInteger)


class InvoiceDocument(DefaultBase):
    """The PDF of an invoice as it was delivered: rendered on first download and kept."""

    __tablename__ = "invoice_documents"

    invoice_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("invoices.id", ondelete="CASCADE"), primary_key=True
    )
    pdf: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    rendered_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
