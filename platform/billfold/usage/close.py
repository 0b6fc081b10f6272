"""Month close, the core's driver: once per organization and UTC calendar month.

Each organization's close is its own transaction that first inserts its ``month_closes`` row
(organization, period) and then calls ``billfold_month_close`` (the tiers plugin re-qualifies
there; invoices are cut after it). Exactly once, with any number of workers and CLI runs: a second
closer's insert waits on the first's uncommitted row and then finds it (nothing to do); a closer
killed half-way committed nothing, so the next run closes that organization. Pricing never waits
for a close.
"""

from __future__ import annotations

import datetime
import logging
import re
import uuid

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.clock import now
from billfold.config import UsageConfig
from billfold.db import Database, dialect_insert, table_of
from billfold.errors import ValidationFailed
from billfold.events.outbox import emit
from billfold.hookspecs import WorkerTask, hookimpl
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


class MonthCloseService:
    def __init__(self, db: Database, orgs: OrgService, hooks: Hooks, config: UsageConfig) -> None:
        self.db = db
        self.orgs = orgs
        self.hooks = hooks
        self.config = config

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
            await self.hooks.call("billfold_month_close", conn=c, org_id=org_id, period=period)
            await emit(c, "month.closed", {"period": period}, org_id=org_id)
            return True

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
