"""Wire shapes of the invoice routes: document 004's invoice rows (major units, upper-case
currency) and the billing details."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from typing import Annotated

import msgspec

from billfold.api import family_004 as f004
from billfold.fields import NO_NUL
from billfold.invoices.rows import DetailsRow, InvoiceRow

LegalName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Address = Annotated[
    str, msgspec.Meta(max_length=1000, pattern=NO_NUL, description="Lines separated by newlines.")
]
Country = Annotated[
    str, msgspec.Meta(min_length=2, max_length=2, pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2")
]
VatId = Annotated[str, msgspec.Meta(max_length=32, pattern=NO_NUL)]
Email = Annotated[str, msgspec.Meta(max_length=254, pattern=r"^[^@\x00]+@[^@\x00]+$")]
VoidReason = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=NO_NUL)]


class DetailsIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An organization's billing details, replaced whole; copied into each invoice when it is
    finalized (a later change leaves finalized invoices as they are)."""

    legal_name: LegalName
    address: Address = ""
    country: Country | None = None
    vat_id: VatId | None = None
    email: Email | None = None


class DetailsOut(msgspec.Struct):
    legal_name: str
    address: str
    country: str | None
    vat_id: str | None
    email: str | None
    updated_at: datetime.datetime | None
    """None: never set (the legal name is the organization's name)."""


class VoidIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: VoidReason


class InvoiceLineOut(msgspec.Struct):
    kind: str
    """usage (by channel, message type and unit price) or charge (direct charges by description)."""
    channel: str | None
    message_type: str | None
    unit: str | None
    description: str
    quantity: int
    unit_price: float | None
    """Major units per unit, as charged (exact in ``unit_price_exact``)."""
    unit_price_exact: str | None
    """The exact decimal price of one unit in major units, as text."""
    amount: float


class StatementItem(msgspec.Struct):
    description: str
    count: int
    amount: float


class Statement(msgspec.Struct):
    """The prepaid balance over the period: opening + payments + adjustments - total - refunds =
    closing (total = free + reserved)."""

    opening_balance: float
    payments: list[StatementItem]
    adjustments: list[StatementItem]
    refunds: list[StatementItem]
    closing_balance: float
    closing_reserved: float
    """Part of the closing balance held for operations in flight."""


class InvoiceOut(msgspec.Struct):
    id: uuid.UUID
    number: str
    period: str
    period_start: datetime.datetime
    period_end: datetime.datetime
    """Exclusive (the first instant of the next month, UTC)."""
    currency: str
    lines: list[InvoiceLineOut]
    subtotal: float
    tax: float
    tax_rate: str
    """Percent contained in the (tax-inclusive) total."""
    total: float
    status: str
    """finalized | void"""
    issued_at: datetime.datetime
    pdf_url: str
    """The PDF, with the same bearer authentication."""
    pdf_link: str
    """The PDF without authentication, for a browser: valid until ``pdf_link_expires_at``."""
    pdf_link_expires_at: datetime.datetime
    statement: Statement
    customer: dict[str, str | None]
    voided_at: datetime.datetime | None
    void_reason: str | None


class InvoicePage(msgspec.Struct):
    items: list[InvoiceOut]
    next_cursor: str | None
    has_more: bool


class AdminInvoiceOut(InvoiceOut):
    org_id: uuid.UUID | None = None


class AdminInvoicePage(msgspec.Struct):
    items: list[AdminInvoiceOut]
    next_cursor: str | None
    has_more: bool


class RenderedOut(msgspec.Struct):
    invoice_id: uuid.UUID
    number: str
    bytes: int
    sha256: str


def details_out(row: DetailsRow) -> DetailsOut:
    return DetailsOut(
        legal_name=row.legal_name,
        address=row.address,
        country=row.country,
        vat_id=row.vat_id,
        email=row.email,
        updated_at=row.updated_at,
    )


def _exact(price: str | None, minor_units: int) -> tuple[float | None, str | None]:
    if price is None:
        return None, None
    value = Decimal(price).scaleb(-minor_units).normalize()
    text = f"{value:f}"
    return float(text), text


def invoice_out(
    invoice: InvoiceRow, minor_units: int, link: tuple[str, int], *, admin: bool = False
) -> InvoiceOut:
    def major(cents: int) -> float:
        return f004.major(cents, minor_units)

    def items(kind: str, sign: int = 1) -> list[StatementItem]:
        return [
            StatementItem(
                description=i["description"], count=i["count"], amount=major(sign * i["amount_cents"])
            )
            for i in invoice.statement.get(kind, [])
        ]

    out_lines = []
    for line in invoice.lines:
        price, exact = _exact(line.unit_price, minor_units)
        out_lines.append(
            InvoiceLineOut(
                kind=line.kind,
                channel=line.channel,
                message_type=line.message_type,
                unit=line.unit,
                description=line.description,
                quantity=line.quantity,
                unit_price=price,
                unit_price_exact=exact,
                amount=major(line.amount_cents),
            )
        )
    path, expires = link
    fields = dict(
        id=invoice.id,
        number=invoice.number,
        period=invoice.period,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        currency=f004.currency_code(invoice.currency),
        lines=out_lines,
        subtotal=major(invoice.subtotal_cents),
        tax=major(invoice.tax_cents),
        tax_rate=invoice.tax_rate,
        total=major(invoice.total_cents),
        status=invoice.status,
        issued_at=invoice.issued_at,
        pdf_url=f"/v1/billing/invoices/{invoice.id}/pdf",
        pdf_link=path,
        pdf_link_expires_at=datetime.datetime.fromtimestamp(expires, datetime.UTC),
        statement=Statement(
            opening_balance=major(invoice.opening_cents),
            payments=items("payments"),
            adjustments=items("adjustments"),
            refunds=items("refunds"),
            closing_balance=major(invoice.closing_cents),
            closing_reserved=major(invoice.closing_reserved_cents),
        ),
        customer={k: (None if v is None else str(v)) for k, v in invoice.customer.items()},
        voided_at=invoice.voided_at,
        void_reason=invoice.void_reason,
    )
    if admin:
        return AdminInvoiceOut(org_id=invoice.org_id, **fields)  # type: ignore[arg-type]
    return InvoiceOut(**fields)  # type: ignore[arg-type]
