"""The organization page's charts: daily series computed in SQL, drawn as SVG in Python.

The free balance of a day is ``free_after_cents`` of the day's last ledger entry (the day before
the window opens from the last entry before it; a day without entries keeps the previous value).
Daily usage per channel sums the ``usage_daily`` rollups. Both are UTC days of the business clock.
The SVG is plain markup (no script): lines, bars, a few labels; text is escaped.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from html import escape

import msgspec
from sqlalchemy import Date, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from billfold.db import table_of
from billfold.ledger.models import Entry
from billfold.money import format_minor
from billfold.usage.models import UsageDaily

entries = table_of(Entry)
usage_daily = table_of(UsageDaily)

PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626")
"""Channel colours, in the order channels are first seen (then repeated)."""


class Point(msgspec.Struct, frozen=True):
    day: datetime.date
    value: int


class Series(msgspec.Struct, frozen=True):
    name: str
    color: str
    points: list[Point]


def utc_day(conn: AsyncConnection, column: ColumnElement[datetime.datetime]) -> ColumnElement[datetime.date]:
    """The UTC calendar day of a timestamp column, on PostgreSQL (timestamptz) and SQLite (UTC text)."""
    if conn.dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


def _as_date(value: object) -> datetime.date:
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    return datetime.date.fromisoformat(str(value)[:10])


def days_of(first: datetime.date, last: datetime.date) -> list[datetime.date]:
    return [first + datetime.timedelta(days=n) for n in range((last - first).days + 1)]


async def free_balance_series(
    conn: AsyncConnection, org_id: uuid.UUID, first: datetime.date, last: datetime.date
) -> list[Point]:
    """The free balance at the end of each UTC day from ``first`` to ``last`` (inclusive)."""
    since = datetime.datetime.combine(first, datetime.time(), tzinfo=datetime.UTC)
    day = utc_day(conn, entries.c.created_at).label("day")
    last_ids = (
        select(func.max(entries.c.id))
        .where(entries.c.org_id == org_id, entries.c.created_at >= since)
        .group_by(day)
        .scalar_subquery()
    )
    rows = (
        await conn.execute(
            select(utc_day(conn, entries.c.created_at), entries.c.free_after_cents).where(
                entries.c.id.in_(last_ids)
            )
        )
    ).all()
    opening = (
        await conn.execute(
            select(entries.c.free_after_cents)
            .where(entries.c.org_id == org_id, entries.c.created_at < since)
            .order_by(entries.c.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    by_day = {_as_date(d): int(v) for d, v in rows}
    value = int(opening or 0)
    points = []
    for current in days_of(first, last):
        value = by_day.get(current, value)
        points.append(Point(current, value))
    return points


async def usage_series(
    conn: AsyncConnection, org_id: uuid.UUID, first: datetime.date, last: datetime.date
) -> list[Series]:
    """Per channel, the minor units charged each UTC day (zero on days without usage)."""
    rows = (
        await conn.execute(
            select(usage_daily.c.channel, usage_daily.c.day, func.sum(usage_daily.c.amount_cents))
            .where(usage_daily.c.org_id == org_id, usage_daily.c.day >= first, usage_daily.c.day <= last)
            .group_by(usage_daily.c.channel, usage_daily.c.day)
            .order_by(usage_daily.c.channel)
        )
    ).all()
    per_channel: dict[str, dict[datetime.date, int]] = {}
    for channel, day, amount in rows:
        per_channel.setdefault(channel, {})[_as_date(day)] = int(amount or 0)
    days = days_of(first, last)
    return [
        Series(
            name=channel,
            color=PALETTE[index % len(PALETTE)],
            points=[Point(d, values.get(d, 0)) for d in days],
        )
        for index, (channel, values) in enumerate(sorted(per_channel.items()))
    ]


# -- SVG -----------------------------------------------------------------------------------------------

WIDTH = 640
HEIGHT = 220
LEFT = 8
RIGHT = 12
TOP = 30
BOTTOM = 30


def _scale(low: int, high: int) -> tuple[int, int]:
    if low == high:
        return (low - 1, high + 1) if low else (0, 1)
    return low, high


def _y(value: int, low: int, high: int) -> float:
    inner = HEIGHT - TOP - BOTTOM
    return TOP + inner - (value - low) * inner / (high - low)


def _x(index: int, count: int) -> float:
    inner = WIDTH - LEFT - RIGHT
    return LEFT + (index * inner / (count - 1) if count > 1 else inner / 2)


def _frame(title: str, low: int, high: int, days: Sequence[datetime.date], minor_units: int) -> list[str]:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" class="chart">',
        f"<title>{escape(title)}</title>",
    ]
    for value in (low, (low + high) // 2, high):
        y = _y(value, low, high)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{LEFT}" y="{y - 4:.1f}" text-anchor="start" class="tick">'
            f"{escape(format_minor(value, minor_units))}</text>"
        )
    if days:
        for index in (0, len(days) - 1):
            anchor = "start" if index == 0 else "end"
            parts.append(
                f'<text x="{_x(index, len(days)):.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}" class="tick">'
                f"{days[index].isoformat()}</text>"
            )
    if low < 0 < high:
        y = _y(0, low, high)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="zero"/>')
    return parts


def line_chart(title: str, points: Sequence[Point], *, minor_units: int = 2) -> str:
    """The free balance as a line (with a dot on the last day)."""
    values = [p.value for p in points]
    low, high = _scale(min([0, *values]), max([0, *values]))
    days = [p.day for p in points]
    parts = _frame(title, low, high, days, minor_units)
    coords = " ".join(f"{_x(i, len(points)):.1f},{_y(p.value, low, high):.1f}" for i, p in enumerate(points))
    if points:
        parts.append(f'<polyline points="{coords}" class="line" data-series="free"/>')
        last = points[-1]
        parts.append(
            f'<circle cx="{_x(len(points) - 1, len(points)):.1f}" '
            f'cy="{_y(last.value, low, high):.1f}" r="3.5" '
            f'class="dot" data-value="{last.value}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    title: str, series: Sequence[Series], days: Sequence[datetime.date], *, minor_units: int = 2
) -> str:
    """Daily usage per channel as stacked bars."""
    totals = [sum(s.points[i].value for s in series) for i in range(len(days))]
    low, high = _scale(0, max([0, *totals]))
    parts = _frame(title, low, high, days, minor_units)
    inner = WIDTH - LEFT - RIGHT
    slot = inner / max(len(days), 1)
    bar = max(slot * 0.7, 1.0)
    for index in range(len(days)):
        base = 0
        x = LEFT + index * slot + (slot - bar) / 2
        for s in series:
            value = s.points[index].value
            if value <= 0:
                continue
            top = _y(base + value, low, high)
            height = _y(base, low, high) - top
            parts.append(
                f'<rect x="{x:.1f}" y="{top:.1f}" width="{bar:.1f}" height="{height:.1f}" fill="{s.color}">'
                f"<title>{escape(s.name)} {days[index].isoformat()}: "
                f"{escape(format_minor(value, minor_units))}</title></rect>"
            )
            base += value
    parts.append("</svg>")
    return "".join(parts)
