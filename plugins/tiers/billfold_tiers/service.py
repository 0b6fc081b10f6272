"""Tier standing per organization, channel and UTC month: pricing, qualification, pins.

The hot path (:meth:`Tiers.price`) is one statement: ``UPDATE tiers_months SET volume = volume +
:units ... RETURNING`` inside the usage write's transaction. The update locks the month's row, and
the core takes the organization's account lock before it prices, so events racing across a
threshold are priced exactly as if they had come one after the other. The step that prices an
event is the one in force when it was accepted (the row's step before the update); when the new
volume reaches a higher threshold the organization moves up for its next event.

A month's row is created from the month before when its first event is priced or when the month
before closes, whichever comes first (:meth:`Tiers.ensure_month`), so pricing never waits for a
close. Months with no row had no counted units; they count as months below the threshold.
"""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from typing import Any, cast

import msgspec
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import BigInteger, String, Table, bindparam, delete, select, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold import NotFound, PriceQuote, UsageItem, ValidationFailed, emit, now
from billfold_tiers.config import Ladder, TiersConfig
from billfold_tiers.models import TierMonth, TierPin

months = cast("Table", TierMonth.__table__)
pins = cast("Table", TierPin.__table__)

SOURCES = ("volume", "retained", "manual", "default")


def month_of(at: datetime.datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


def next_month(month: str) -> str:
    year, number = int(month[:4]), int(month[5:7])
    return f"{year + (number == 12):04d}-{number % 12 + 1:02d}"


def month_start(month: str) -> datetime.datetime:
    return datetime.datetime(int(month[:4]), int(month[5:7]), 1, tzinfo=datetime.UTC)


def months_between(earlier: str, later: str) -> int:
    """How many months ``later`` is after ``earlier``."""
    return (int(later[:4]) - int(earlier[:4])) * 12 + int(later[5:7]) - int(earlier[5:7])


class Standing(msgspec.Struct, frozen=True, kw_only=True):
    """A month's row: the step in force, the units counted, the counter and the source."""

    month: str
    step: str
    volume: int
    downgrade_counter: int
    source: str
    pin_until: datetime.datetime | None = None


def qualify(ladder: Ladder, previous: Standing, after: int, months_after: int) -> tuple[int, int, str]:
    """The step index, downgrade counter and source ``months_after`` months after ``previous``
    (months in between had no counted units).

    A month at or above the threshold of its step resets the counter; one below adds one; when the
    counter reaches ``after`` the next month starts one step down and shows the counter that moved
    it, then counting restarts at the new step."""
    step = ladder.index(previous.step)
    if step is None:  # the step left the ladder (config edit): requalify on the month's volume
        step = ladder.for_volume(previous.volume)
    counter = previous.downgrade_counter
    volume = previous.volume
    source = previous.source
    for _ in range(months_after):
        if step == 0:
            return 0, 0, "default"
        if counter >= after:  # the month began with a downgrade: counting restarts
            counter = 0
        if volume >= ladder.threshold(step):
            counter, source = 0, "volume"
        else:
            counter += 1
            if counter >= after:
                step -= 1
                source = "default" if step == 0 else "retained"
            else:
                source = "retained"
        volume = 0
    return step, counter, source


_ADD = (
    text(
        "UPDATE tiers_months SET volume = volume + :units "
        "WHERE org_id = :org_id AND channel = :channel AND month = :month "
        "RETURNING step, volume, source, pin_until"
    )
    .bindparams(bindparam("org_id", type_=GUID()))
    .columns(step=String(), volume=BigInteger(), source=String(), pin_until=DateTimeUTC(timezone=True))
)
"""Constant statement (compiled once; it runs for every priced event of a tiered channel)."""


class Tiers:
    """The tiers of one running Billfold (its config and database)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.config: TiersConfig = state.plugin_config("tiers")

    def ladder(self, channel: str) -> Ladder | None:
        return self.config.channels.get(channel)

    def known(self, channel: str) -> Ladder:
        ladder = self.ladder(channel)
        if ladder is None:
            tiered = ", ".join(self.config.channels) or "none"
            raise ValidationFailed(
                f"channel {channel!r} has no tiers (tiered channels: {tiered})",
                code="untiered_channel",
                field="channel",
            )
        return ladder

    # -- prices ------------------------------------------------------------------------------------

    def unit_price(
        self, channel: str, ladder: Ladder, step: int, message_type: str | None, currency: str
    ) -> Decimal:
        if step > 0:
            price = ladder.steps[step - 1].price_for(message_type, currency)
            if price is not None:
                return price
        # the base step is the channel's own price (and a step without this currency falls back)
        channel_config = self.state.config.channels[channel]
        base: Decimal = channel_config.price_for(message_type, currency)
        return base

    async def price(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        channel: str,
        message_type: str | None,
        quantity: int,
        currency: str,
        at: datetime.datetime,
    ) -> PriceQuote | None:
        ladder = self.ladder(channel)
        if ladder is None:
            return None
        month = month_of(at)
        units = quantity if ladder.counts(message_type) else 0
        key = {"org_id": org_id, "channel": channel, "month": month, "units": units}
        row = (await conn.execute(_ADD, key)).first()
        if row is None:
            await self.ensure_month(conn, org_id, channel, month, at)
            row = (await conn.execute(_ADD, key)).first()
            assert row is not None
        step_name, volume, source = row.step, row.volume, row.source
        step = ladder.index(step_name)
        if step is None:  # a step removed from the ladder: the step the volume before reached
            step = ladder.for_volume(volume - units)
        if source == "manual" and row.pin_until is not None and row.pin_until <= at:
            source = await self._pin_expired(conn, org_id, channel, month, ladder, step, volume)
        quote_step = step
        if source != "manual":
            reached = ladder.for_volume(volume)
            if reached > step:
                await self._move(conn, org_id, channel, month, step_name, ladder.names[reached], "volume")
                step = reached
            elif source == "retained" and volume >= ladder.threshold(step):
                await self._set_source(conn, org_id, channel, month, "volume")
        return PriceQuote(
            unit_price=self.unit_price(channel, ladder, quote_step, message_type, currency),
            tier={"channel": channel, "current": ladder.names[step], "volume_used": volume},
        )

    async def price_many(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        items: list[UsageItem],
        currency: str,
        at: datetime.datetime,
    ) -> list[PriceQuote | None] | None:
        """The quotes :meth:`price` would give ``items`` one after another, with one statement per
        tiered channel: the channel's units are added at once and the step in force is followed
        through the items in memory; the moves it makes are written once, each announced. None
        (nothing changed) when a channel's row is in a state the batch does not follow (a pinned
        step whose pin has run out, a step no longer on the ladder): the core then prices the
        events one at a time."""
        month = month_of(at)
        quotes: list[PriceQuote | None] = [None] * len(items)
        by_channel: dict[str, list[int]] = {}
        for position, item in enumerate(items):
            if self.ladder(item.channel) is not None:
                by_channel.setdefault(item.channel, []).append(position)
        added: list[tuple[str, int]] = []
        for channel, positions in by_channel.items():
            ladder = self.known(channel)
            units = [items[p].quantity if ladder.counts(items[p].message_type) else 0 for p in positions]
            key = {"org_id": org_id, "channel": channel, "month": month, "units": sum(units)}
            row = (await conn.execute(_ADD, key)).first()
            if row is None:
                await self.ensure_month(conn, org_id, channel, month, at)
                row = (await conn.execute(_ADD, key)).first()
                assert row is not None
            added.append((channel, sum(units)))
            step = ladder.index(row.step)
            source = row.source
            if step is None or (source == "manual" and row.pin_until is not None and row.pin_until <= at):
                for undo, total in added:
                    await conn.execute(_ADD, {**key, "channel": undo, "units": -total})
                return None
            volume = row.volume - sum(units)
            start_step, start_source = step, source
            moves: list[tuple[str, str]] = []
            for position, count in zip(positions, units, strict=True):
                quote_step = step
                volume += count
                if source != "manual":
                    reached = ladder.for_volume(volume)
                    if reached > step:
                        moves.append((ladder.names[step], ladder.names[reached]))
                        step, source = reached, "volume"
                    elif source == "retained" and volume >= ladder.threshold(step):
                        source = "volume"
                item = items[position]
                quotes[position] = PriceQuote(
                    unit_price=self.unit_price(channel, ladder, quote_step, item.message_type, currency),
                    tier={"channel": channel, "current": ladder.names[step], "volume_used": volume},
                )
            if (step, source) != (start_step, start_source):
                await conn.execute(
                    months.update()
                    .where(months.c.org_id == org_id, months.c.channel == channel, months.c.month == month)
                    .values(step=ladder.names[step], source=source, downgrade_counter=0, updated_at=now())
                )
            for before, after in moves:
                await self._changed(conn, org_id, channel, before, after, "volume", month)
        return quotes

    async def give_back(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        channel: str,
        message_type: str | None,
        units: int,
        month: str,
    ) -> None:
        """A reserved send failed or expired: its units leave the month's volume (never below 0;
        a step already reached stays)."""
        ladder = self.ladder(channel)
        if ladder is None or not ladder.counts(message_type) or units <= 0:
            return
        await conn.execute(
            months.update()
            .where(months.c.org_id == org_id, months.c.channel == channel, months.c.month == month)
            .values(volume=months.c.volume - units)
        )
        await conn.execute(
            months.update()
            .where(months.c.org_id == org_id, months.c.channel == channel, months.c.volume < 0)
            .values(volume=0)
        )

    # -- months ------------------------------------------------------------------------------------

    async def _row(
        self, conn: AsyncConnection, org_id: uuid.UUID, channel: str, month: str
    ) -> Standing | None:
        row = (
            await conn.execute(
                select(months).where(
                    months.c.org_id == org_id, months.c.channel == channel, months.c.month == month
                )
            )
        ).first()
        return None if row is None else _standing(row)

    async def compute(
        self, conn: AsyncConnection, org_id: uuid.UUID, channel: str, month: str
    ) -> tuple[Standing, str | None]:
        """The standing a month starts with (without writing it), and the step of the month before
        it when that differs (a downgrade)."""
        ladder = self.known(channel)
        start = month_start(month)
        pin = (
            await conn.execute(select(pins).where(pins.c.org_id == org_id, pins.c.channel == channel))
        ).first()
        latest = (
            await conn.execute(
                select(months)
                .where(months.c.org_id == org_id, months.c.channel == channel, months.c.month < month)
                .order_by(months.c.month.desc())
                .limit(1)
            )
        ).first()
        before = None if latest is None else _standing(latest)
        if (
            pin is not None
            and (pin.until is None or pin.until > start)
            and ladder.index(pin.step) is not None
        ):
            standing = Standing(
                month=month,
                step=pin.step,
                volume=0,
                downgrade_counter=0,
                source="manual",
                pin_until=pin.until,
            )
        elif before is None:
            standing = Standing(
                month=month, step=ladder.base, volume=0, downgrade_counter=0, source="default"
            )
        else:
            step, counter, source = qualify(
                ladder, before, self.config.downgrade_after_months, months_between(before.month, month)
            )
            standing = Standing(
                month=month, step=ladder.names[step], volume=0, downgrade_counter=counter, source=source
            )
        changed = before.step if before is not None and before.step != standing.step else None
        return standing, changed

    async def ensure_month(
        self, conn: AsyncConnection, org_id: uuid.UUID, channel: str, month: str, at: datetime.datetime
    ) -> None:
        """Create the month's row from the month before (once; a second caller finds it)."""
        standing, changed = await self.compute(conn, org_id, channel, month)
        inserted = await conn.execute(
            _insert(conn)
            .values(
                org_id=org_id,
                channel=channel,
                month=month,
                step=standing.step,
                volume=0,
                downgrade_counter=standing.downgrade_counter,
                source=standing.source,
                pin_until=standing.pin_until,
                updated_at=at,
            )
            .on_conflict_do_nothing()
        )
        if inserted.rowcount and changed is not None:
            await self._changed(conn, org_id, channel, changed, standing.step, standing.source, month)

    async def standing(self, conn: AsyncConnection, org_id: uuid.UUID, channel: str, month: str) -> Standing:
        """The month's standing as it is, or as it will start (nothing is written)."""
        row = await self._row(conn, org_id, channel, month)
        if row is not None:
            return row
        standing, _ = await self.compute(conn, org_id, channel, month)
        return standing

    async def close_month(self, conn: AsyncConnection, org_id: uuid.UUID, period: str) -> None:
        """``period`` closed: the month after starts from it, for every channel this organization
        has a standing on (one never tiered has nothing to carry)."""
        following = next_month(period)
        at = now()
        for channel in self.config.channels:
            exists = (
                await conn.execute(
                    select(months.c.month)
                    .where(months.c.org_id == org_id, months.c.channel == channel, months.c.month <= period)
                    .limit(1)
                )
            ).first()
            pinned = (
                await conn.execute(
                    select(pins.c.step).where(pins.c.org_id == org_id, pins.c.channel == channel)
                )
            ).first()
            if exists is not None or pinned is not None:
                await self.ensure_month(conn, org_id, channel, following, at)

    # -- tier object -------------------------------------------------------------------------------

    async def tier(
        self, conn: AsyncConnection, org_id: uuid.UUID, channel: str, month: str
    ) -> dict[str, Any]:
        """Document 004's tier object for a channel and month."""
        ladder = self.known(channel)
        standing = await self.standing(conn, org_id, channel, month)
        step = ladder.index(standing.step)
        if step is None:
            step = ladder.for_volume(standing.volume)
        following = step + 1 if step < len(ladder.steps) else None
        return {
            "channel": channel,
            "current": ladder.names[step],
            "qualification_source": standing.source,
            "volume_used": standing.volume,
            "month": month,
            "current_threshold": ladder.threshold(step),
            "next_tier": None if following is None else ladder.names[following],
            "next_threshold": None if following is None else ladder.threshold(following),
            "downgrade_counter": standing.downgrade_counter,
            "pinned_until": None if standing.pin_until is None else standing.pin_until.isoformat(),
        }

    # -- pins --------------------------------------------------------------------------------------

    async def pin(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        channel: str,
        step_name: str,
        until: datetime.datetime | None,
        reason: str,
    ) -> None:
        ladder = self.known(channel)
        if ladder.index(step_name) is None:
            raise ValidationFailed(
                f"channel {channel!r} has no step {step_name!r} (steps: {', '.join(ladder.names)})",
                code="unknown_step",
                field="step",
            )
        at = now()
        if until is not None and until <= at:
            raise ValidationFailed("until must be in the future", field="until")
        month = month_of(at)
        await self.ensure_month(conn, org_id, channel, month, at)
        current = await self._row(conn, org_id, channel, month)
        assert current is not None
        await conn.execute(delete(pins).where(pins.c.org_id == org_id, pins.c.channel == channel))
        await conn.execute(
            pins.insert().values(
                org_id=org_id, channel=channel, step=step_name, until=until, reason=reason, pinned_at=at
            )
        )
        await conn.execute(
            months.update()
            .where(months.c.org_id == org_id, months.c.channel == channel, months.c.month == month)
            .values(step=step_name, source="manual", downgrade_counter=0, pin_until=until, updated_at=at)
        )
        if current.step != step_name or current.source != "manual":
            await self._changed(conn, org_id, channel, current.step, step_name, "manual", month)

    async def unpin(self, conn: AsyncConnection, org_id: uuid.UUID, channel: str) -> None:
        ladder = self.known(channel)
        removed = await conn.execute(delete(pins).where(pins.c.org_id == org_id, pins.c.channel == channel))
        if not removed.rowcount:
            raise NotFound(f"channel {channel!r} of this organization is not pinned", code="not_pinned")
        at = now()
        month = month_of(at)
        current = await self._row(conn, org_id, channel, month)
        if current is not None and current.source == "manual":
            step = ladder.index(current.step) or 0
            await self._release(conn, org_id, channel, month, ladder, step, current.volume)

    async def _pin_expired(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        channel: str,
        month: str,
        ladder: Ladder,
        step: int,
        volume: int,
    ) -> str:
        await conn.execute(delete(pins).where(pins.c.org_id == org_id, pins.c.channel == channel))
        return await self._release(conn, org_id, channel, month, ladder, step, volume)

    async def _release(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        channel: str,
        month: str,
        ladder: Ladder,
        step: int,
        volume: int,
    ) -> str:
        """A pin ends: the step stays, qualified from now on like any other."""
        source = "default" if step == 0 else "volume" if volume >= ladder.threshold(step) else "retained"
        await conn.execute(
            months.update()
            .where(months.c.org_id == org_id, months.c.channel == channel, months.c.month == month)
            .values(source=source, pin_until=None, updated_at=now())
        )
        return source

    async def _move(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        channel: str,
        month: str,
        before: str,
        after: str,
        source: str,
    ) -> None:
        await conn.execute(
            months.update()
            .where(months.c.org_id == org_id, months.c.channel == channel, months.c.month == month)
            .values(step=after, source=source, downgrade_counter=0, updated_at=now())
        )
        await self._changed(conn, org_id, channel, before, after, source, month)

    async def _set_source(
        self, conn: AsyncConnection, org_id: uuid.UUID, channel: str, month: str, source: str
    ) -> None:
        await conn.execute(
            months.update()
            .where(months.c.org_id == org_id, months.c.channel == channel, months.c.month == month)
            .values(source=source, downgrade_counter=0, updated_at=now())
        )

    async def _changed(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        channel: str,
        before: str,
        after: str,
        source: str,
        month: str,
    ) -> None:
        await emit(
            conn,
            "tier.changed",
            {"channel": channel, "from": before, "to": after, "source": source, "month": month},
            org_id=org_id,
        )


def _standing(row: Any) -> Standing:
    return Standing(
        month=row.month,
        step=row.step,
        volume=row.volume,
        downgrade_counter=row.downgrade_counter,
        source=row.source,
        pin_until=row.pin_until,
    )


def _insert(conn: AsyncConnection) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql_insert(months)
    return sqlite_insert(months)


# -- what the route and the command answer -----------------------------------------------------------


class Tier(msgspec.Struct):
    """Document 004's tier object."""

    channel: str
    current: str
    qualification_source: str
    volume_used: int
    month: str
    current_threshold: int
    next_tier: str | None
    next_threshold: int | None
    downgrade_counter: int
    pinned_until: str | None = None


class TierList(msgspec.Struct):
    tiers: list[Tier]


async def tier_list(state: Any, org_id: uuid.UUID, channel: str | None) -> TierList:
    """One channel's tier object this month, or every tiered channel's."""
    tiers = Tiers(state)
    wanted = [channel] if channel is not None else list(tiers.config.channels)
    month = month_of(now())
    async with state.db.reading() as conn:
        for name in wanted:
            tiers.known(name)
        objects = [await tiers.tier(conn, org_id, name, month) for name in wanted]
    return TierList(tiers=[msgspec.convert(o, Tier) for o in objects])
