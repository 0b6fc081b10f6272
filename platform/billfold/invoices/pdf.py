"""The PDF of a finalized invoice, drawn with reportlab from the invoice's own rows.

The bytes depend on the invoice alone (and the logo file, when one is configured): reportlab's
``invariant`` mode fixes the creation date and the document id, and every text printed comes from
the stored invoice (its customer and operator details were copied into it at finalization).
The standard Helvetica fonts are encoded WinAnsi, which has the euro sign, so € and $ print and
extract as text.
"""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from billfold.invoices.rows import InvoiceRow

_STYLES = getSampleStyleSheet()
_BODY = ParagraphStyle("body", parent=_STYLES["Normal"], fontName="Helvetica", fontSize=9, leading=12)
_SMALL = ParagraphStyle("small", parent=_BODY, fontSize=8, leading=10, textColor=colors.HexColor("#555555"))
_TITLE = ParagraphStyle(
    "title", parent=_BODY, fontName="Helvetica-Bold", fontSize=18, leading=22, alignment=TA_RIGHT
)
_RIGHT = ParagraphStyle("right", parent=_BODY, alignment=TA_RIGHT)
_HEAD = ParagraphStyle("head", parent=_BODY, fontName="Helvetica-Bold", fontSize=10, leading=14)


def money(cents: int, currency: str, minor_units: int, symbol: str) -> str:
    """``-€1,234.56`` from minor units (exact: Decimal, never a float)."""
    value = Decimal(abs(cents)).scaleb(-minor_units)
    text = f"{value:,.{minor_units}f}"
    sign = "-" if cents < 0 else ""
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {currency.upper()}"


def unit_price(price: str | None, currency: str, minor_units: int, symbol: str) -> str:
    """An exact unit price in minor units (``0.79``) in major units with every decimal it has."""
    if price is None:
        return ""
    value = Decimal(price).scaleb(-minor_units).normalize()
    exponent = value.as_tuple().exponent
    places = max(minor_units, -exponent if isinstance(exponent, int) else 0)
    text = f"{value:,.{places}f}"
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def _p(text: str, style: ParagraphStyle = _BODY) -> Paragraph:
    return Paragraph(escape(text).replace("\n", "<br/>"), style)


def _lines(details: dict[str, Any], keys: list[tuple[str, str]]) -> str:
    out: list[str] = []
    for key, label in keys:
        value = details.get(key)
        if isinstance(value, list):
            out.extend(str(v) for v in value)
        elif value:
            out.append(f"{label}{value}")
    return "\n".join(out)


def render(invoice: InvoiceRow, *, minor_units: int, symbol: str, logo_path: str | None = None) -> bytes:
    """The invoice as PDF bytes (the same bytes for the same invoice and logo)."""
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=16 * mm,
        title=f"Invoice {invoice.number}",
        author=str(invoice.operator.get("name", "")),
        subject=f"Invoice {invoice.number} for {invoice.period}",
        creator="Billfold",
        producer="Billfold",
        invariant=1,
    )

    def m(cents: int) -> str:
        return money(cents, invoice.currency, minor_units, symbol)

    story: list[Any] = []
    operator = invoice.operator
    seller = _lines(
        operator,
        [("name", ""), ("address", ""), ("tax_id", "VAT/Tax ID: "), ("email", "")],
    )
    header_left: list[Any] = []
    if logo_path and Path(logo_path).is_file():
        logo = Image(logo_path)
        scale = min(40 * mm / logo.imageWidth, 16 * mm / logo.imageHeight, 1)
        logo.drawWidth, logo.drawHeight = logo.imageWidth * scale, logo.imageHeight * scale
        logo.hAlign = "LEFT"
        header_left.append(logo)
    header_left.append(_p(seller))
    title = "INVOICE" if invoice.status == "finalized" else "INVOICE (VOID)"
    meta = [
        [_p(title, _TITLE)],
        [_p(f"Number: {invoice.number}", _RIGHT)],
        [_p(f"Period: {invoice.period}", _RIGHT)],
        [_p(f"Issued: {invoice.issued_at.strftime('%Y-%m-%d %H:%M UTC')}", _RIGHT)],
        [_p(f"Currency: {invoice.currency.upper()}", _RIGHT)],
    ]
    if invoice.status == "void":
        meta.append([_p(f"Voided: {invoice.void_reason or ''}", _RIGHT)])
    header = Table([[header_left, Table(meta, hAlign="RIGHT")]], colWidths=[95 * mm, 79 * mm])
    header.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("ALIGN", (1, 0), (1, 0), "RIGHT")]))
    story += [header, Spacer(1, 8 * mm)]

    customer = invoice.customer
    buyer = _lines(
        customer,
        [("legal_name", ""), ("address", ""), ("country", ""), ("vat_id", "VAT ID: "), ("email", "")],
    )
    story += [_p("Bill to", _HEAD), _p(buyer), Spacer(1, 6 * mm)]

    rows: list[list[Any]] = [["Description", "Quantity", "Unit price", "Amount"]]
    for line in invoice.lines:
        rows.append(
            [
                _p(line.description),
                f"{line.quantity:,}",
                unit_price(line.unit_price, invoice.currency, minor_units, symbol),
                m(line.amount_cents),
            ]
        )
    if len(rows) == 1:
        rows.append([_p("No usage or charges in this period"), "", "", m(0)])
    tax_rate = Decimal(invoice.tax_rate).normalize()
    rows += [
        ["", "", "Subtotal (excl. tax)", m(invoice.subtotal_cents)],
        ["", "", f"Tax {tax_rate:f}% (included)", m(invoice.tax_cents)],
        ["", "", "Total", m(invoice.total_cents)],
    ]
    table = Table(rows, colWidths=[92 * mm, 22 * mm, 32 * mm, 28 * mm], repeatRows=1)
    last = len(rows) - 1
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 9),
                ("FONT", (0, 1), (-1, -1), "Helvetica", 9),
                ("FONT", (2, last), (-1, last), "Helvetica-Bold", 10),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
                ("LINEABOVE", (2, last - 2), (-1, last - 2), 0.5, colors.grey),
                ("LINEABOVE", (2, last), (-1, last), 0.8, colors.black),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#EEEEEE")),
            ]
        )
    )
    story += [table, Spacer(1, 8 * mm)]

    statement: list[list[Any]] = [["Prepaid balance", ""], ["Opening balance", m(invoice.opening_cents)]]
    for item in invoice.statement.get("payments", []):
        statement.append([f"{item['description']} ({item['count']})", m(item["amount_cents"])])
    if invoice.total_cents:
        statement.append(["Usage and charges (this invoice)", m(-invoice.total_cents)])
    for item in invoice.statement.get("adjustments", []):
        statement.append([f"Adjustment: {item['description']}", m(item["amount_cents"])])
    for item in invoice.statement.get("refunds", []):
        statement.append([f"Refund: {item['description']}", m(-item["amount_cents"])])
    statement.append(["Closing balance", m(invoice.closing_cents)])
    if invoice.closing_reserved_cents:
        statement.append(["of which reserved for operations in flight", m(invoice.closing_reserved_cents)])
    box = Table(
        [[_p(str(a)) if i else a, b] for i, (a, b) in enumerate(statement)], colWidths=[120 * mm, 54 * mm]
    )
    box.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 10),
                ("FONT", (0, 1), (-1, -1), "Helvetica", 9),
                ("ALIGN", (1, 0), (1, -1), "RIGHT"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
            ]
        )
    )
    story += [box, Spacer(1, 8 * mm)]
    story.append(
        _p(
            "Prices include tax. This invoice is settled from the prepaid balance: nothing is due. "
            f"Invoice {invoice.number}, period {invoice.period_start:%Y-%m-%d} to "
            f"{invoice.period_end:%Y-%m-%d} (exclusive, UTC).",
            _SMALL,
        )
    )
    doc.build(story)
    return buffer.getvalue()
