"""Month close, the core's driver: once per organization and UTC calendar month.

Each organization's close is its own transaction that first inserts its ``month_closes`` row
(organization, period) and then calls ``billfold_month_close`` (the tiers plugin re-qualifies
there; invoices are cut after it). Exactly once, with any number of workers and CLI runs: a second
closer's insert waits on the first's uncommitted row and then finds it (nothing to do); a closer
killed half-way committed nothing, so the next run closes that organization. Pricing never waits
for a close.

The invoice is cut by an :class:`InvoiceCutter` that the composition root hands in (the invoices
domain's service): usage does not import invoices, invoices reads usage's tables, and the cut runs
in the closing transaction, so an organization's month is closed and invoiced together or not at
all. The organization's account row is locked right after the ``month_closes`` insert, before the
hook (every writer locks the account first): a charge still in flight at the month's end has
committed before the invoice reads the ledger.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import re
import uuid
from typing import Protocol

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.clock import now
from billfold.config import UsageConfig
from billfold.db import Database, dialect_insert, table_of
from billfold.errors import Conflict, NotFound, ValidationFailed
from billfold.events.outbox import emit
from billfold.hookspecs import WorkerTask, hookimpl
from billfold.ledger.service import LedgerService
from billfold.orgs.service import OrgService
from billfold.plugins import Hooks
from billfold.usage.models import MonthClose

logger = logging.getLogger("billfold.usage")

closes = table_of(MonthClose)
PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def parse_period(period: str, field: str = "period") -> tuple[datetime.datetime, datetime.datetime]:
    """[start, end) of a UTC calendar month ``YYYY-MM``."""
    match = PERIOD.match(period)
    if match is None:
        raise ValidationFailed(f"{field} must be a month written YYYY-MM, got {period!r}", field=field)
    year, month = int(match[1]), int(match[2])
    if year < 1:
        raise ValidationFailed(f"{field} must be a month written YYYY-MM, got {period!r}", field=field)
    start = datetime.datetime(year, month, 1, tzinfo=datetime.UTC)
    if (year, month) == (9999, 12):  # the month after does not exist in Python's calendar
        return start, datetime.datetime.max.replace(tzinfo=datetime.UTC)
    end = datetime.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=datetime.UTC)
    return start, end


def period_of(at: datetime.datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


def previous_period(at: datetime.datetime) -> str:
    first = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return period_of(first - datetime.timedelta(days=1))


class CloseReport(msgspec.Struct):
    period: str
    closed: list[uuid.UUID]
    already: int


class InvoiceCutter(Protocol):
    """What the close needs of the invoices domain."""

    async def cut(self, conn: AsyncConnection, org_id: uuid.UUID, period: str) -> object:
        """Finalize the organization's invoice of ``period`` in ``conn``'s transaction (None without
        activity); raise Conflict when a finalized one exists."""
        ...


class MonthCloseService:
    def __init__(
        self,
        db: Database,
        orgs: OrgService,
        hooks: Hooks,
        config: UsageConfig,
        *,
        ledger: LedgerService | None = None,
        invoices: InvoiceCutter | None = None,
    ) -> None:
        self.db = db
        self.orgs = orgs
        self.hooks = hooks
        self.config = config
        self.ledger = ledger
        self.invoices = invoices

    async def close(
        self, period: str, *, org_id: uuid.UUID | None = None, limit: int | None = None
    ) -> CloseReport:
        """Close ``period`` for every organization created before its end (or for ``org_id``)."""
        _, end = parse_period(period)
        if end > now():
            raise ValidationFailed(
                f"{period} has not ended yet (business time {now().isoformat()})", field="period"
            )
        async with self.db.reading() as conn:
            candidates = await self.orgs.ids_created_before(conn, end, only=org_id)
            done = set(
                (await conn.execute(select(closes.c.org_id).where(closes.c.period == period))).scalars().all()
            )
        closed: list[uuid.UUID] = []
        for candidate in candidates:
            if candidate in done:
                continue
            if limit is not None and len(closed) >= limit:
                break
            if await self.close_one(candidate, period):
                closed.append(candidate)
        return CloseReport(period=period, closed=closed, already=len(done & set(candidates)))

    async def close_one(self, org_id: uuid.UUID, period: str, *, conn: AsyncConnection | None = None) -> bool:
        """Close one organization's month; False when it was already closed."""
        async with self.db.transaction(conn) as c:
            inserted = await c.execute(
                dialect_insert(c)(closes)
                .values(org_id=org_id, period=period, closed_at=now())
                .on_conflict_do_nothing()
            )
            if inserted.rowcount != 1:
                return False
            await self._lock_account(c, org_id)
            await self.hooks.call("billfold_month_close", conn=c, org_id=org_id, period=period)
            if self.invoices is not None:
                await self.invoices.cut(c, org_id, period)
            await emit(c, "month.closed", {"period": period}, org_id=org_id)
            return True

    async def _lock_account(self, conn: AsyncConnection, org_id: uuid.UUID) -> None:
        if self.ledger is None:
            return
        with contextlib.suppress(NotFound):  # no account, no ledger entries: nothing to wait for
            await self.ledger.lock(conn, org_id)

    async def reissue(self, org_id: uuid.UUID, period: str) -> object:
        """Cut a new invoice for a closed month whose invoice was voided (the next number); None
        when the month had no activity."""
        parse_period(period)
        if self.invoices is None:
            raise RuntimeError("no invoices service")
        async with self.db.transaction() as c:
            closed = (
                await c.execute(
                    select(closes.c.org_id).where(closes.c.org_id == org_id, closes.c.period == period)
                )
            ).first()
            if closed is None:
                raise Conflict(
                    f"{period} is not closed for this organization: close it first (without --reissue)",
                    code="month_not_closed",
                    field="period",
                )
            await self._lock_account(c, org_id)
            return await self.invoices.cut(c, org_id, period)

    async def close_due(self) -> int:
        """The worker's task: the month before the business clock's, once it ended
        ``usage.month_close_after_minutes`` ago."""
        at = now()
        first = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if at - first < datetime.timedelta(minutes=self.config.month_close_after_minutes):
            return 0
        report = await self.close(previous_period(at), limit=100)
        if report.closed:
            logger.info("month %s closed for %d organization(s)", report.period, len(report.closed))
        return len(report.closed)

    @hookimpl
    def billfold_worker_tasks(self) -> list[WorkerTask]:
        return [WorkerTask(name="month-close", interval_seconds=30.0, run=self.close_due)]
