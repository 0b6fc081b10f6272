"""What the invoice tables hold, as immutable rows, and their mapping."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import msgspec

from billfold.db import table_of
from billfold.invoices.models import BillingDetails, Invoice, InvoiceCounter, InvoiceDocument, InvoiceLine

details_table = table_of(BillingDetails)
counters = table_of(InvoiceCounter)
invoices = table_of(Invoice)
lines = table_of(InvoiceLine)
documents = table_of(InvoiceDocument)


def as_utc(value: datetime.datetime) -> datetime.datetime:
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


class DetailsRow(msgspec.Struct, frozen=True):
    org_id: uuid.UUID
    legal_name: str
    address: str
    country: str | None
    vat_id: str | None
    email: str | None
    updated_at: datetime.datetime | None

    def snapshot(self) -> dict[str, Any]:
        """What an invoice keeps of them."""
        return {
            "legal_name": self.legal_name,
            "address": self.address,
            "country": self.country,
            "vat_id": self.vat_id,
            "email": self.email,
        }


class LineRow(msgspec.Struct, frozen=True):
    position: int
    kind: str
    channel: str | None
    message_type: str | None
    unit: str | None
    description: str
    quantity: int
    unit_price: str | None
    amount_cents: int


class InvoiceRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    org_id: uuid.UUID
    number: str
    period: str
    period_start: datetime.datetime
    period_end: datetime.datetime
    currency: str
    status: str
    opening_cents: int
    opening_reserved_cents: int
    payments_cents: int
    adjustments_cents: int
    refunds_cents: int
    closing_cents: int
    closing_reserved_cents: int
    subtotal_cents: int
    tax_cents: int
    total_cents: int
    tax_rate: str
    statement: dict[str, Any]
    customer: dict[str, Any]
    operator: dict[str, Any]
    issued_at: datetime.datetime
    voided_at: datetime.datetime | None
    void_reason: str | None
    lines: list[LineRow]


def line_row(row: Any) -> LineRow:
    return LineRow(
        position=row.position,
        kind=row.kind,
        channel=row.channel,
        message_type=row.message_type,
        unit=row.unit,
        description=row.description,
        quantity=row.quantity,
        unit_price=row.unit_price,
        amount_cents=row.amount_cents,
    )


def invoice_row(row: Any, found_lines: list[LineRow]) -> InvoiceRow:
    return InvoiceRow(
        id=row.id,
        org_id=row.org_id,
        number=row.number,
        period=row.period,
        period_start=as_utc(row.period_start),
        period_end=as_utc(row.period_end),
        currency=row.currency,
        status=row.status,
        opening_cents=row.opening_cents,
        opening_reserved_cents=row.opening_reserved_cents,
        payments_cents=row.payments_cents,
        adjustments_cents=row.adjustments_cents,
        refunds_cents=row.refunds_cents,
        closing_cents=row.closing_cents,
        closing_reserved_cents=row.closing_reserved_cents,
        subtotal_cents=row.subtotal_cents,
        tax_cents=row.tax_cents,
        total_cents=row.total_cents,
        tax_rate=row.tax_rate,
        statement=row.statement or {},
        customer=row.customer or {},
        operator=row.operator or {},
        issued_at=as_utc(row.issued_at),
        voided_at=as_utc(row.voided_at) if row.voided_at else None,
        void_reason=row.void_reason,
        lines=found_lines,
    )
