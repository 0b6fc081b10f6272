"""Usage reports, read from the daily rollups (never the events): a month of a million events is a
few rows per channel and day."""

from __future__ import annotations

import calendar
import datetime
import uuid
from typing import Any, Literal

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.db import Database, table_of
from billfold.plugins import Hooks
from billfold.usage.models import UsageDaily

daily = table_of(UsageDaily)

GroupBy = Literal["channel", "message_type", "category", "day"]
GROUPS: tuple[GroupBy, ...] = ("channel", "message_type", "category", "day")


class Total(msgspec.Struct, frozen=True):
    key: str
    quantity: int
    """Billed units (minutes for a time-billed channel)."""
    raw_quantity: int
    """As reported (seconds for a time-billed channel)."""
    amount_cents: int
    events: int


def month_bounds(month: str) -> tuple[datetime.date, datetime.date]:
    """First and last day of a UTC calendar month ``YYYY-MM``."""
    year, number = (int(part) for part in month.split("-"))
    return datetime.date(year, number, 1), datetime.date(year, number, calendar.monthrange(year, number)[1])


class UsageReports:
    def __init__(self, db: Database, hooks: Hooks) -> None:
        self.db = db
        self.hooks = hooks

    async def tiers(self, org_id: uuid.UUID, channels: list[str], month: str) -> dict[str, Any]:
        """Each channel's tier progress for ``month`` from ``billfold_usage_tier`` (None without a
        tiers plugin)."""
        if not self.hooks.implemented("billfold_usage_tier"):
            return {}
        async with self.db.reading() as conn:
            return {
                channel: await self.hooks.first(
                    "billfold_usage_tier", conn=conn, org_id=org_id, channel=channel, month=month
                )
                for channel in channels
            }

    async def grouped(
        self,
        org_id: uuid.UUID,
        first: datetime.date,
        last: datetime.date,
        group_by: GroupBy,
        *,
        channel: str | None = None,
        category: str | None = None,
        conn: AsyncConnection | None = None,
    ) -> list[Total]:
        """Sums per ``group_by`` over the days ``first``..``last`` (inclusive)."""
        key: Any = getattr(daily.c, group_by)
        stmt = (
            select(
                key,
                func.sum(daily.c.billed_quantity),
                func.sum(daily.c.quantity),
                func.sum(daily.c.amount_cents),
                func.sum(daily.c.events),
            )
            .where(daily.c.org_id == org_id, daily.c.day >= first, daily.c.day <= last)
            .group_by(key)
            .order_by(key)
        )
        if channel is not None:
            stmt = stmt.where(daily.c.channel == channel)
        if category is not None:
            stmt = stmt.where(daily.c.category == category)
        async with self.db.reading(conn) as c:
            rows = (await c.execute(stmt)).all()
        return [
            Total(
                key=row[0].isoformat() if isinstance(row[0], datetime.date) else str(row[0]),
                quantity=int(row[1] or 0),
                raw_quantity=int(row[2] or 0),
                amount_cents=int(row[3] or 0),
                events=int(row[4] or 0),
            )
            for row in rows
        ]

    async def total(
        self,
        org_id: uuid.UUID,
        first: datetime.date,
        last: datetime.date,
        *,
        channel: str | None = None,
        category: str | None = None,
    ) -> Total:
        rows = await self.grouped(org_id, first, last, "channel", channel=channel, category=category)
        return Total(
            key=channel or category or "",
            quantity=sum(r.quantity for r in rows),
            raw_quantity=sum(r.raw_quantity for r in rows),
            amount_cents=sum(r.amount_cents for r in rows),
            events=sum(r.events for r in rows),
        )
