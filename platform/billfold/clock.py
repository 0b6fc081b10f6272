"""The business clock: the time of business events (entries, cycles, months, tiers, invoices).

Like Stripe's test clocks. In production it is the real UTC time, always. Outside production it
is the real time plus an offset kept in the database (table ``business_clock``, one row), so the
server, the worker and the CLI agree on it:

- ``BILLFOLD_NOW=2026-01-31T23:59:00Z`` starts the clock at that instant when a process starts
  (the first process stores it; later processes with the same value keep the stored offset, so
  an advance is not undone), and it then ticks with real time;
- ``POST /v1/admin/clock`` (operator, development only) advances it; every process picks the new
  offset up within a second (the worker at each round, the CLI when it starts).

Leases, retries, rate limits, caches, hold expiry timers and signature timestamps keep real time
(:func:`billfold.db.utcnow`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Awaitable, Callable

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Integer, String, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db.base import dialect_insert, table_of, utcnow
from billfold.db.uow import Database
from billfold.errors import StartupError, ValidationFailed

ENV_VAR = "BILLFOLD_NOW"


class ClockSetting(DefaultBase):
    """One row: the business clock's offset from real time (development and tests only)."""

    __tablename__ = "business_clock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset_microseconds: Mapped[int] = mapped_column(BigInteger, default=0)
    origin: Mapped[str | None] = mapped_column(String(64), default=None)
    """The BILLFOLD_NOW value that set the offset (a process started with another value resets it)."""
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


_clock = table_of(ClockSetting)
_offset = datetime.timedelta(0)


def now() -> datetime.datetime:
    """The business time (aware UTC)."""
    return datetime.datetime.now(datetime.UTC) + _offset


def offset() -> datetime.timedelta:
    return _offset


def set_offset(value: datetime.timedelta) -> None:
    """Set this process's offset (the database is the shared truth: see :class:`BusinessClock`)."""
    global _offset
    _offset = value


def parse_instant(value: str) -> datetime.datetime:
    text = value.strip().replace("Z", "+00:00")
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            f"{value!r} is not an ISO 8601 timestamp (e.g. 2026-01-31T23:59:00Z)", field=ENV_VAR
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


class BusinessClock:
    """Loads, starts and advances the shared offset. Built by the composition root."""

    def __init__(self, db: Database, *, production: bool) -> None:
        self.db = db
        self.production = production

    def check_environment(self) -> None:
        """Production refuses to start with BILLFOLD_NOW set, and runs on real time."""
        if self.production:
            if os.environ.get(ENV_VAR):
                raise StartupError(f"{ENV_VAR} is set but environment is production: unset it")
            set_offset(datetime.timedelta(0))

    async def start(self) -> None:
        """Apply BILLFOLD_NOW (when set and not yet stored), then load the shared offset."""
        self.check_environment()
        if self.production:
            return
        start = os.environ.get(ENV_VAR)
        async with self.db.transaction() as conn:
            if start:
                row = (await conn.execute(select(_clock.c.origin).where(_clock.c.id == 1))).first()
                if row is None or row.origin != start:
                    wanted = parse_instant(start) - utcnow()
                    await self._store(conn, wanted, origin=start)
            await self.load(conn)

    async def load(self, conn: AsyncConnection | None = None) -> datetime.timedelta:
        """Read the shared offset into this process (cheap: one row)."""
        if self.production:
            return datetime.timedelta(0)
        async with self.db.reading(conn) as c:
            micros = (
                await c.execute(select(_clock.c.offset_microseconds).where(_clock.c.id == 1))
            ).scalar_one_or_none()
        value = datetime.timedelta(microseconds=micros or 0)
        set_offset(value)
        return value

    async def advance(
        self,
        by: datetime.timedelta,
        *,
        on_stored: Callable[[AsyncConnection, datetime.datetime, datetime.datetime], Awaitable[None]]
        | None = None,
    ) -> datetime.datetime:
        """Move the business clock forward (never back: entries and months only go forward).
        ``on_stored`` runs in the same transaction with the business time before and after."""
        if self.production:
            raise RuntimeError("the business clock cannot move in production")
        if by < datetime.timedelta(0):
            raise ValidationFailed("the business clock only moves forward", field="seconds")
        async with self.db.transaction() as conn:
            current = await self.load(conn)
            await self._store(conn, current + by)
            if on_stored is not None:
                real = datetime.datetime.now(datetime.UTC)
                await on_stored(conn, real + current, real + current + by)
        set_offset(current + by)
        return now()

    async def _store(
        self, conn: AsyncConnection, value: datetime.timedelta, origin: str | None = None
    ) -> None:
        micros = value // datetime.timedelta(microseconds=1)
        values: dict[str, object] = {"offset_microseconds": micros, "updated_at": utcnow()}
        if origin is not None:
            values["origin"] = origin
        updated = await conn.execute(update(_clock).where(_clock.c.id == 1).values(**values))
        if updated.rowcount == 0:
            await conn.execute(
                dialect_insert(conn)(_clock)
                .values(id=1, **values)
                .on_conflict_do_update(index_elements=[_clock.c.id], set_=values)
            )
