"""Prices from billing.yaml and the carried fraction.

The core's flat price answers ``billfold_price_usage`` last (``trylast``): a plugin that answers
first (the tiers plugin) replaces it. Amounts are integers in minor units; prices are exact
decimals. Each organization, channel and currency keeps the exact total its usage has cost and
what was charged for it (always ``round(exact_total)``); an event is charged the difference, so
N events at a fractional price cost round(N x price), to within one minor unit, at every point in
time, whatever the order or interleaving of the events.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import cast

from advanced_alchemy.types import GUID
from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.config import ChannelConfig
from billfold.db import table_of
from billfold.hookspecs import PriceQuote, UsageItem, hookimpl
from billfold.usage.models import UsageCarry

carry = table_of(UsageCarry)


def rounded(value: Decimal) -> int:
    """Half up to a whole minor unit (0.5 cent → 1 cent)."""
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def ceiling(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def price_text(price: Decimal) -> str:
    """A price as the API shows it: exact, without exponent or trailing zeros (``"0.79"``, ``"8"``)."""
    text = format(price.normalize(), "f")
    return text


class FlatPrices:
    """The core's price list: ``channels.<name>.price`` or its message type's price."""

    def __init__(self, channels: Mapping[str, ChannelConfig]) -> None:
        self.channels = channels

    @hookimpl(trylast=True)
    def billfold_price_usage(
        self, channel: str, message_type: str | None, currency: str, at: datetime.datetime
    ) -> PriceQuote | None:
        config = self.channels.get(channel)
        if config is None:
            return None
        return PriceQuote(unit_price=config.price_for(message_type, currency))

    @hookimpl(trylast=True)
    def billfold_price_usage_batch(self, items: list[UsageItem], currency: str) -> list[PriceQuote | None]:
        """The same flat prices for a batch's items (no state: nothing to count)."""
        quotes: list[PriceQuote | None] = []
        for item in items:
            config = self.channels.get(item.channel)
            quotes.append(
                None
                if config is None
                else PriceQuote(unit_price=config.price_for(item.message_type, currency))
            )
        return quotes


_CARRY = select(carry.c.exact_total, carry.c.charged_cents).where(
    carry.c.org_id == bindparam("org_id"),
    carry.c.channel == bindparam("channel"),
    carry.c.currency == bindparam("currency"),
)
_CARRY_SET = text(
    "INSERT INTO usage_carry (org_id, channel, currency, exact_total, charged_cents) "
    "VALUES (:org_id, :channel, :currency, :exact_total, :charged) "
    "ON CONFLICT (org_id, channel, currency) "
    "DO UPDATE SET exact_total = excluded.exact_total, charged_cents = excluded.charged_cents"
).bindparams(bindparam("org_id", type_=GUID()))
"""Constant statements (built and compiled once: they run for every usage event)."""


UNREAD = object()
"""``carried`` not read by the caller: :func:`carry_charge` reads it."""


async def carry_charge(
    conn: AsyncConnection,
    org_id: uuid.UUID,
    channel: str,
    currency: str,
    exact: Decimal,
    *,
    carried: tuple[str, int] | object | None = UNREAD,
) -> int:
    """Add ``exact`` (units x price) to the carried total and return the whole minor units to charge
    for it now: round(total after) - round(total before). The caller holds the account lock (every
    usage write of an organization takes it first), so the read and the write are one step.
    ``carried`` is the row's (exact_total, charged_cents), or None for no row, when the caller read
    it already (the usage write reads it with the account lock, in the same statement)."""
    key = {"org_id": org_id, "channel": channel, "currency": currency}
    if carried is UNREAD:
        row = (await conn.execute(_CARRY, key)).first()
        carried = None if row is None else (row.exact_total, row.charged_cents)
    if carried is None:
        total, charged = exact, 0
    else:
        before, charged = cast("tuple[str, int]", carried)
        total = Decimal(before) + exact
    charge = rounded(total) - charged
    await conn.execute(_CARRY_SET, {**key, "exact_total": str(total), "charged": charged + charge})
    return charge


async def store_carries(
    conn: AsyncConnection, org_id: uuid.UUID, currency: str, carried: dict[str, tuple[str, int]]
) -> None:
    """Set the carried totals of several channels at once (a batch priced them in memory, under
    the account lock): channel → (exact_total, charged_cents)."""
    await conn.execute(
        _CARRY_SET,
        [
            {
                "org_id": org_id,
                "channel": channel,
                "currency": currency,
                "exact_total": total,
                "charged": charged,
            }
            for channel, (total, charged) in sorted(carried.items())
        ],
    )
