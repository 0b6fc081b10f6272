"""Invoices: cut at month close from what the ledger booked, numbered without gaps, kept immutable.

**Contents.** An invoice covers one organization and one UTC calendar month ``[start, end)`` of
business time, read from the ledger entries whose ``created_at`` falls in it — usage counts when
its money left the balance (the capture, for a reserved send). Everything is summed in SQL per
organization: one pass over the organization's entries before ``end`` (opening and closing
balances, total = free + reserved, so a hold open across the month end reconciles), one GROUP BY of
the month's usage entries joined to the usage events that made them (channel, message type and
the unit price stored when the event was priced — never a price table read again), and one GROUP
BY of the other entries by kind and description (payments, direct charges, adjustments, refunds).

The invoice bills usage and direct charges (``total``, tax included: prepaid money is spent
gross; ``tax`` is what the total contains at the currency's configured rate). Payments,
adjustments and refunds are the statement around it, so that
``opening + payments + adjustments - total - refunds = closing`` holds to the cent.

**Numbers** are ``<prefix>-<year>-<000001>``, gapless per prefix and year of finalization (UTC
business time). The counter row of (prefix, year) is incremented by an upsert inside the
finalizing transaction: it stays locked until that transaction ends, so concurrent closers take
numbers one after the other, a number is consumed only if its invoice commits, and a crashed close
gives its number back with everything else. A voided invoice keeps its number; its reissue takes
the next one.

**PDFs are stored**, rendered on first download and kept in ``invoice_documents``: the document a
customer received stays byte-for-byte what the operator archives even if the template, the logo or
reportlab change later (the operator may re-render on purpose). Rendering is not done inside the
month close, whose transactions stay short for ten thousand organizations.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import msgspec
from sqlalchemy import BigInteger, and_, case, func, literal, or_, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.audit.service import AuditActor, record_audit
from billfold.clock import now
from billfold.config import ChannelConfig, CurrencyConfig, InvoicesConfig
from billfold.db import Database, dialect_insert, new_id, table_of
from billfold.errors import Conflict, Forbidden, NotFound, ValidationFailed
from billfold.events.outbox import emit
from billfold.invoices.rows import (
    DetailsRow,
    InvoiceRow,
    LineRow,
    as_utc,
    counters,
    details_table,
    documents,
    invoice_row,
    invoices,
    line_row,
    lines,
)
from billfold.invoices.schemas import DetailsIn
from billfold.ledger.rows import accounts, entries
from billfold.orgs.models import Organization
from billfold.usage.close import parse_period
from billfold.usage.models import UsageEvent

logger = logging.getLogger("billfold.invoices")

usage_events = table_of(UsageEvent)
organizations = table_of(Organization)

MOVING_KINDS = ("credit", "debit", "capture", "adjustment", "refund")
"""Entry kinds that move the total balance (holds and releases move money between free and
reserved only)."""
LINK_SECONDS = 15 * 60
"""How long a signed PDF link works."""


class LinkSigner:
    """Signed, expiring PDF links: HMAC-SHA256 of ``<invoice id>.<expiry unix seconds>`` with a
    server secret (``BILLFOLD_INVOICE_LINK_SECRET``, given by the composition root)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def signature(self, invoice_id: uuid.UUID, expires: int) -> str:
        return hmac.new(self._secret, f"{invoice_id}.{expires}".encode(), hashlib.sha256).hexdigest()

    def link(self, invoice_id: uuid.UUID, *, at: float | None = None) -> tuple[str, int]:
        """(path with query, expiry in unix seconds), valid :data:`LINK_SECONDS` from now (real time)."""
        expires = int(at if at is not None else time.time()) + LINK_SECONDS
        signature = self.signature(invoice_id, expires)
        return (
            f"/v1/billing/invoices/{invoice_id}/pdf/signed?expires={expires}&signature={signature}",
            expires,
        )

    def check(self, invoice_id: uuid.UUID, expires: int, signature: str) -> None:
        """403 for a forged or an expired link."""
        expected = self.signature(invoice_id, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise Forbidden("this link is not valid", code="invalid_link_signature", field="signature")
        if expires < time.time():
            raise Forbidden(
                "this link has expired",
                code="link_expired",
                fix="Ask the API for the invoice again: it answers a fresh link.",
                field="expires",
            )


class Movements(msgspec.Struct, frozen=True):
    opening: int
    opening_reserved: int
    closing: int
    closing_reserved: int
    entries_in_period: int


def _tax_contained(total: int, rate: Decimal) -> int:
    """The tax a gross ``total`` contains at ``rate`` percent, rounded half up to a minor unit."""
    if not rate:
        return 0
    return int((Decimal(total) * rate / (Decimal(100) + rate)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _describe_usage(channel: str, message_type: str | None, unit: str | None) -> str:
    name = f"{channel} {message_type}" if message_type else channel
    return f"Usage: {name} ({unit}s)" if unit else f"Usage: {name}"


class InvoiceService:
    def __init__(
        self,
        db: Database,
        config: InvoicesConfig,
        *,
        currencies: Mapping[str, CurrencyConfig],
        channels: Mapping[str, ChannelConfig],
        links: LinkSigner,
    ) -> None:
        self.db = db
        self.config = config
        self.currencies = currencies
        self.channels = channels
        self.links = links

    # -- billing details ------------------------------------------------------------------------------

    async def details(self, org_id: uuid.UUID, *, conn: AsyncConnection | None = None) -> DetailsRow:
        """The organization's billing details; never set: its name and nothing else."""
        d = details_table.c
        stmt = (
            select(organizations.c.name, d.legal_name, d.address, d.country, d.vat_id, d.email, d.updated_at)
            .select_from(organizations.outerjoin(details_table, d.org_id == organizations.c.id))
            .where(organizations.c.id == org_id)
        )
        async with self.db.reading(conn) as c:
            row = (await c.execute(stmt)).first()
        if row is None:
            raise NotFound("organization not found", code="organization_not_found")
        if row.legal_name is None:
            return DetailsRow(
                org_id=org_id,
                legal_name=row.name,
                address="",
                country=None,
                vat_id=None,
                email=None,
                updated_at=None,
            )
        return DetailsRow(
            org_id=org_id,
            legal_name=row.legal_name,
            address=row.address,
            country=row.country,
            vat_id=row.vat_id,
            email=row.email,
            updated_at=as_utc(row.updated_at) if row.updated_at else None,
        )

    async def set_details(self, org_id: uuid.UUID, change: DetailsIn) -> DetailsRow:
        legal_name = change.legal_name.strip()
        if not legal_name:
            raise ValidationFailed("legal_name must not be blank", field="legal_name")
        country = change.country.upper() if change.country else None
        values = {
            "legal_name": legal_name,
            "address": change.address.strip(),
            "country": country,
            "vat_id": change.vat_id.strip() or None if change.vat_id else None,
            "email": change.email.strip() or None if change.email else None,
            "updated_at": now(),
        }
        async with self.db.transaction() as conn:
            exists = (
                await conn.execute(select(organizations.c.id).where(organizations.c.id == org_id))
            ).first()
            if exists is None:
                raise NotFound("organization not found", code="organization_not_found")
            await conn.execute(
                dialect_insert(conn)(details_table)
                .values(org_id=org_id, **values)
                .on_conflict_do_update(index_elements=[details_table.c.org_id], set_=values)
            )
            return await self.details(org_id, conn=conn)

    # -- cutting ----------------------------------------------------------------------------------------

    async def movements(
        self, conn: AsyncConnection, org_id: uuid.UUID, start: datetime.datetime, end: datetime.datetime
    ) -> Movements:
        """Balances at ``start`` and ``end`` and the number of entries between, in one pass."""
        before = entries.c.created_at < start
        row = (
            await conn.execute(
                select(
                    func.coalesce(func.sum(case((before, entries.c.amount_cents), else_=0)), 0),
                    func.coalesce(func.sum(case((before, entries.c.reserved_delta_cents), else_=0)), 0),
                    func.coalesce(func.sum(entries.c.amount_cents), 0),
                    func.coalesce(func.sum(entries.c.reserved_delta_cents), 0),
                    func.count(case((entries.c.created_at >= start, 1))),
                ).where(entries.c.org_id == org_id, entries.c.created_at < end)
            )
        ).one()
        return Movements(*(int(value) for value in row))

    async def cut(self, conn: AsyncConnection, org_id: uuid.UUID, period: str) -> InvoiceRow | None:
        """Finalize the organization's invoice of ``period`` in the caller's transaction (the month
        close's, after ``billfold_month_close``): None without activity in the period; 409 when a
        finalized invoice of the period exists (void it first)."""
        start, end = parse_period(period)
        currency = (
            await conn.execute(select(accounts.c.currency).where(accounts.c.org_id == org_id))
        ).scalar_one_or_none()
        if currency is None:
            return None
        moved = await self.movements(conn, org_id, start, end)
        if moved.entries_in_period == 0:
            return None
        live = (
            await conn.execute(
                select(invoices.c.number).where(
                    invoices.c.org_id == org_id, invoices.c.period == period, invoices.c.status == "finalized"
                )
            )
        ).scalar_one_or_none()
        if live is not None:
            raise Conflict(
                f"{period} already has invoice {live}: void it before reissuing",
                code="invoice_exists",
                field="period",
            )

        in_period = and_(
            entries.c.org_id == org_id, entries.c.created_at >= start, entries.c.created_at < end
        )
        made_by = and_(usage_events.c.org_id == entries.c.org_id, usage_events.c.entry_id == entries.c.id)
        charged = (
            select(
                usage_events.c.channel,
                usage_events.c.message_type,
                usage_events.c.unit_price,
                func.sum(usage_events.c.billed_quantity).label("quantity"),
                func.sum(entries.c.amount_cents).label("amount"),
            )
            .select_from(entries.join(usage_events, made_by))
            .where(in_period)
            .group_by(usage_events.c.channel, usage_events.c.message_type, usage_events.c.unit_price)
        )
        # Units whose charge rounded to nothing (the carried fraction of a fractional price): they
        # moved no money, yet they were sent at that price and belong on the line's quantity.
        uncharged = (
            select(
                usage_events.c.channel,
                usage_events.c.message_type,
                usage_events.c.unit_price,
                func.sum(usage_events.c.billed_quantity).label("quantity"),
                literal(0, BigInteger).label("amount"),
            )
            .where(
                usage_events.c.org_id == org_id,
                usage_events.c.entry_id.is_(None),
                usage_events.c.billed_quantity > 0,
                or_(
                    and_(
                        usage_events.c.status == "accepted",
                        usage_events.c.created_at >= start,
                        usage_events.c.created_at < end,
                    ),
                    and_(
                        usage_events.c.status == "delivered",
                        usage_events.c.settled_at >= start,
                        usage_events.c.settled_at < end,
                    ),
                ),
            )
            .group_by(usage_events.c.channel, usage_events.c.message_type, usage_events.c.unit_price)
        )
        usage = (await conn.execute(union_all(charged, uncharged))).all()
        merged: dict[tuple[str, str | None, str], list[int]] = {}
        for channel, message_type, price, quantity, amount in usage:
            into = merged.setdefault((channel, message_type, price), [0, 0])
            into[0] += int(quantity)
            into[1] += int(amount)
        others = (
            await conn.execute(
                select(entries.c.kind, entries.c.description, func.count(), func.sum(entries.c.amount_cents))
                .select_from(entries.outerjoin(usage_events, made_by))
                .where(in_period, usage_events.c.id.is_(None), entries.c.kind.in_(MOVING_KINDS))
                .group_by(entries.c.kind, entries.c.description)
            )
        ).all()

        found: list[LineRow] = []
        for (channel, message_type, price), (quantity, amount) in sorted(
            merged.items(), key=lambda r: (r[0][0], r[0][1] or "", Decimal(r[0][2]))
        ):
            unit = self.channels[channel].unit if channel in self.channels else None
            found.append(
                LineRow(
                    position=0,
                    kind="usage",
                    channel=channel,
                    message_type=message_type,
                    unit=unit,
                    description=_describe_usage(channel, message_type, unit),
                    quantity=quantity,
                    unit_price=price,
                    amount_cents=-amount,
                )
            )
        charges: dict[str, tuple[int, int]] = {}
        statement: dict[str, list[dict[str, Any]]] = {"payments": [], "adjustments": [], "refunds": []}
        for kind, description, count, amount in sorted(others, key=lambda r: (r[0], r[1])):
            label = description or {"credit": "Payment", "adjustment": "Adjustment", "refund": "Refund"}.get(
                kind, "Charge"
            )
            if kind in ("debit", "capture"):
                had = charges.get(label, (0, 0))
                charges[label] = (had[0] + int(count), had[1] - int(amount))
            elif kind == "credit":
                statement["payments"].append(
                    {"description": label, "count": count, "amount_cents": int(amount)}
                )
            elif kind == "adjustment":
                statement["adjustments"].append(
                    {"description": label, "count": count, "amount_cents": int(amount)}
                )
            else:
                statement["refunds"].append(
                    {"description": label, "count": count, "amount_cents": -int(amount)}
                )
        for label, (count, amount) in sorted(charges.items()):
            found.append(
                LineRow(
                    position=0,
                    kind="charge",
                    channel=None,
                    message_type=None,
                    unit=None,
                    description=label,
                    quantity=count,
                    unit_price=None,
                    amount_cents=amount,
                )
            )
        found = [msgspec.structs.replace(line, position=n) for n, line in enumerate(found, 1)]

        total = sum(line.amount_cents for line in found)
        payments = sum(item["amount_cents"] for item in statement["payments"])
        adjustments = sum(item["amount_cents"] for item in statement["adjustments"])
        refunds = sum(item["amount_cents"] for item in statement["refunds"])
        if moved.opening + payments + adjustments - total - refunds != moved.closing:
            # Every moving entry is in exactly one of the groups above: this cannot happen unless
            # an entry kind was added without a place on the invoice.
            raise RuntimeError(f"invoice of {org_id} for {period} does not reconcile with the ledger")
        rate = self.config.tax_rates.get(currency, Decimal(0))
        tax = _tax_contained(total, rate)
        customer = (await self.details(org_id, conn=conn)).snapshot()
        operator = self._operator()
        tax_rate = f"{rate.normalize():f}"
        issued_at = now()
        series = self.config.number_prefix
        year = issued_at.year
        sequence = await self._next_number(conn, series, year)
        invoice_id = new_id()
        number = f"{series}-{year:04d}-{sequence:06d}"
        shown = {
            "id": invoice_id,
            "org_id": org_id,
            "number": number,
            "period": period,
            "period_start": start,
            "period_end": end,
            "currency": currency,
            "status": "finalized",
            "opening_cents": moved.opening,
            "opening_reserved_cents": moved.opening_reserved,
            "payments_cents": payments,
            "adjustments_cents": adjustments,
            "refunds_cents": refunds,
            "closing_cents": moved.closing,
            "closing_reserved_cents": moved.closing_reserved,
            "subtotal_cents": total - tax,
            "tax_cents": tax,
            "total_cents": total,
            "tax_rate": tax_rate,
            "statement": statement,
            "customer": customer,
            "operator": operator,
            "issued_at": issued_at,
        }
        # the row written and the row answered are the same fields (plus the number's parts)
        await conn.execute(invoices.insert().values(**shown, series=series, year=year, sequence=sequence))
        if found:
            await conn.execute(
                lines.insert(), [{"invoice_id": invoice_id, **msgspec.structs.asdict(line)} for line in found]
            )
        await emit(
            conn,
            "invoice.finalized",
            {
                "invoice_id": str(invoice_id),
                "number": number,
                "period": period,
                "total": total,
                "tax": tax,
                "currency": currency,
                "pdf_path": f"/v1/billing/invoices/{invoice_id}/pdf",
            },
            org_id=org_id,
        )
        return InvoiceRow(**shown, voided_at=None, void_reason=None, lines=found)

    async def _next_number(self, conn: AsyncConnection, series: str, year: int) -> int:
        """Take the next number of (series, year): the upsert locks the counter row until the
        caller's transaction ends (PostgreSQL; SQLite serializes writers anyway)."""
        upsert = (
            dialect_insert(conn)(counters)
            .values(series=series, year=year, last=1)
            .on_conflict_do_update(
                index_elements=[counters.c.series, counters.c.year], set_={"last": counters.c.last + 1}
            )
            .returning(counters.c.last)
        )
        return int((await conn.execute(upsert)).scalar_one())

    def _operator(self) -> dict[str, Any]:
        config = self.config
        return {
            "name": config.operator_name,
            "address": list(config.operator_address),
            "tax_id": config.operator_tax_id,
            "email": config.operator_email,
        }

    # -- reads ------------------------------------------------------------------------------------------

    async def _get(self, conn: AsyncConnection, invoice_id: uuid.UUID) -> InvoiceRow:
        row = (await conn.execute(select(invoices).where(invoices.c.id == invoice_id))).one()
        return (await self._with_lines(conn, [row]))[0]

    async def _with_lines(self, conn: AsyncConnection, rows: Sequence[Any]) -> list[InvoiceRow]:
        if not rows:
            return []
        by_invoice: dict[uuid.UUID, list[LineRow]] = {row.id: [] for row in rows}
        for line in await conn.execute(
            select(lines).where(lines.c.invoice_id.in_(list(by_invoice))).order_by(lines.c.position)
        ):
            by_invoice[line.invoice_id].append(line_row(line))
        return [invoice_row(row, by_invoice[row.id]) for row in rows]

    async def get(self, invoice_id: uuid.UUID, *, org_id: uuid.UUID | None = None) -> InvoiceRow:
        """An invoice (of ``org_id`` when given: another organization's is 404)."""
        stmt = select(invoices).where(invoices.c.id == invoice_id)
        if org_id is not None:
            stmt = stmt.where(invoices.c.org_id == org_id)
        async with self.db.reading() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                raise NotFound("invoice not found", code="invoice_not_found", field="invoice_id")
            return (await self._with_lines(conn, [row]))[0]

    async def list(
        self,
        *,
        org_id: uuid.UUID | None,
        limit: int,
        cursor: uuid.UUID | None = None,
        period: str | None = None,
    ) -> tuple[list[InvoiceRow], uuid.UUID | None]:
        """A page of invoices, newest first (ids are time-ordered), and the cursor of the next."""
        stmt = select(invoices)
        if org_id is not None:
            stmt = stmt.where(invoices.c.org_id == org_id)
        if period is not None:
            stmt = stmt.where(invoices.c.period == period)
        if cursor is not None:
            stmt = stmt.where(invoices.c.id < cursor)
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt.order_by(invoices.c.id.desc()).limit(limit + 1))).all()
            page = await self._with_lines(conn, rows[:limit])
        return page, (page[-1].id if len(rows) > limit and page else None)

    # -- the operator -------------------------------------------------------------------------------------

    async def void(
        self, invoice_id: uuid.UUID, reason: str, *, actor: AuditActor | None = None
    ) -> InvoiceRow:
        """Void a finalized invoice (its number stays taken); 409 when it is already void. With an
        ``actor`` (the operator's routes and commands) the audit row is written in the same
        transaction."""
        reason = reason.strip()
        if not reason:
            raise ValidationFailed("reason must not be blank", field="reason")
        async with self.db.transaction() as conn:
            done = (
                await conn.execute(
                    update(invoices)
                    .where(invoices.c.id == invoice_id, invoices.c.status == "finalized")
                    .values(status="void", voided_at=now(), void_reason=reason)
                    .returning(invoices.c.org_id, invoices.c.number, invoices.c.period)
                )
            ).first()
            if done is None:
                exists = (
                    await conn.execute(select(invoices.c.status).where(invoices.c.id == invoice_id))
                ).first()
                if exists is None:
                    raise NotFound("invoice not found", code="invoice_not_found", field="invoice_id")
                raise Conflict("this invoice is already void", code="invoice_void")
            # A stored PDF shows the old status: the next download renders the void one.
            await conn.execute(documents.delete().where(documents.c.invoice_id == invoice_id))
            await emit(
                conn,
                "invoice.voided",
                {
                    "invoice_id": str(invoice_id),
                    "number": done.number,
                    "period": done.period,
                    "reason": reason,
                },
                org_id=done.org_id,
            )
            voided = await self._get(conn, invoice_id)
            if actor is not None:
                await record_audit(
                    conn,
                    actor,
                    "invoice.voided",
                    org_id=done.org_id,
                    target=done.number,
                    before={"status": "finalized"},
                    after={"status": "void"},
                    reason=reason,
                )
            return voided

    # -- PDFs -------------------------------------------------------------------------------------------

    def render(self, invoice: InvoiceRow) -> bytes:
        # reportlab is imported when a PDF is drawn, not by every command that loads this module
        from billfold.invoices import pdf

        currency = self.currencies.get(invoice.currency)
        return pdf.render(
            invoice,
            minor_units=currency.minor_units if currency else 2,
            symbol=currency.symbol if currency else "",
            logo_path=self.config.logo_path,
        )

    async def pdf(
        self, invoice_id: uuid.UUID, *, org_id: uuid.UUID | None = None
    ) -> tuple[InvoiceRow, bytes]:
        """The stored PDF, rendered and stored on first use."""
        invoice = await self.get(invoice_id, org_id=org_id)
        async with self.db.reading() as conn:
            stored = (
                await conn.execute(select(documents.c.pdf).where(documents.c.invoice_id == invoice_id))
            ).scalar_one_or_none()
        if stored is not None:
            return invoice, bytes(stored)
        return invoice, await self._store(invoice, replace=False)

    async def rerender(self, invoice_id: uuid.UUID) -> tuple[InvoiceRow, bytes]:
        """Render the PDF again from the invoice (after a logo or template change) and keep it."""
        invoice = await self.get(invoice_id)
        return invoice, await self._store(invoice, replace=True)

    async def _store(self, invoice: InvoiceRow, *, replace: bool) -> bytes:
        rendered = self.render(invoice)
        values = {"pdf": rendered, "sha256": hashlib.sha256(rendered).hexdigest(), "rendered_at": now()}
        async with self.db.transaction() as conn:
            insert = dialect_insert(conn)(documents).values(invoice_id=invoice.id, **values)
            if replace:
                await conn.execute(
                    insert.on_conflict_do_update(index_elements=[documents.c.invoice_id], set_=values)
                )
                return rendered
            await conn.execute(insert.on_conflict_do_nothing(index_elements=[documents.c.invoice_id]))
            kept = (
                await conn.execute(select(documents.c.pdf).where(documents.c.invoice_id == invoice.id))
            ).scalar_one()
        return bytes(kept)
