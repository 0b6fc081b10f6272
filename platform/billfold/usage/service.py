"""The usage service: price a reported event, check its caps, debit (or hold) its price, count it.

One event is one transaction that first locks the organization's account row (as every debit
does), so an organization's events are priced, capped and counted one after another, on SQLite
and on PostgreSQL with many processes alike. An event refused (402, 409, 400) leaves nothing
behind: not the event, not its counters, not its carried fraction.
"""

from __future__ import annotations

import datetime
import hashlib
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal, NamedTuple

import msgspec
from advanced_alchemy.types import GUID
from sqlalchemy import Date, and_, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.clock import now
from billfold.config import ChannelConfig, CurrencyConfig, UsageConfig
from billfold.db import Database, dialect_insert, new_id, table_of
from billfold.errors import BillfoldError, Conflict, NotFound, PaymentRequired, ValidationFailed
from billfold.events.outbox import emit
from billfold.hookspecs import PriceQuote, UsageItem, WorkerTask, hookimpl
from billfold.ledger.holds import HoldService
from billfold.ledger.rows import ACCOUNT_COLUMNS, AccountRow, Posted, accounts, as_utc, holds
from billfold.ledger.schemas import to_transaction
from billfold.ledger.service import MAX_AMOUNT, LedgerService, NewEntry
from billfold.orgs.service import OrgService, organizations
from billfold.payments.profiles import ProfileService, profiles
from billfold.plugins import Hooks
from billfold.usage.close import period_of
from billfold.usage.models import UsageDaily, UsageEvent, UsageSession, UsageSubscriberMonth
from billfold.usage.plans import PlanService, Usage, plans_table
from billfold.usage.pricing import carry, carry_charge, ceiling, price_text, rounded, store_carries
from billfold.usage.schemas import BatchResult, SettleIn, UsageBalance, UsageBilling, UsageIn, UsageOut

events = table_of(UsageEvent)
daily = table_of(UsageDaily)
sessions = table_of(UsageSession)
subscriber_months = table_of(UsageSubscriberMonth)

_ENCODE = msgspec.json.Encoder(order="deterministic")

# Constant statements, built and compiled once (see billfold.usage.plans: building Core statements
# and compiling INSERT ... ON CONFLICT on every event cost more CPU than running them).
_INSERT_EVENT = events.insert()
_ROLL_UP = text(
    "INSERT INTO usage_daily "
    "(org_id, day, channel, message_type, category, events, quantity, billed_quantity, amount_cents) "
    "VALUES (:org_id, :day, :channel, :message_type, :category, :events, :quantity, :billed, :amount) "
    "ON CONFLICT (org_id, day, channel, message_type, category) DO UPDATE SET "
    "events = usage_daily.events + excluded.events, quantity = usage_daily.quantity + excluded.quantity, "
    "billed_quantity = usage_daily.billed_quantity + excluded.billed_quantity, "
    "amount_cents = usage_daily.amount_cents + excluded.amount_cents"
).bindparams(bindparam("org_id", type_=GUID()), bindparam("day", type_=Date()))


_PLAN_COLUMNS = [column.label(f"plan_{column.name}") for column in plans_table.c]
_CONTEXT = (
    select(
        *ACCOUNT_COLUMNS,
        organizations.c.status,
        organizations.c.created_at,
        profiles.c.usage_cap_cents,
        events.c.request_hash,
        events.c.result,
        carry.c.exact_total,
        carry.c.charged_cents,
        *_PLAN_COLUMNS,
    )
    .select_from(
        accounts.join(organizations, organizations.c.id == accounts.c.org_id)
        .outerjoin(profiles, profiles.c.org_id == accounts.c.org_id)
        .outerjoin(plans_table, plans_table.c.org_id == accounts.c.org_id)
        .outerjoin(
            events, and_(events.c.org_id == accounts.c.org_id, events.c.event_id == bindparam("event_id"))
        )
        .outerjoin(
            carry,
            and_(
                carry.c.org_id == accounts.c.org_id,
                carry.c.channel == bindparam("channel"),
                carry.c.currency == accounts.c.currency,
            ),
        )
    )
    .where(accounts.c.org_id == bindparam("org_id"))
)
"""What one event needs before it is priced, read after the account lock in one statement: the
account, the organization's standing, its spend cap, its plan, an earlier event with this
``event_id`` and the carried fraction of this channel. Each is a one-row lookup by primary or
unique key; five statements in one (bench/run.py: server CPU per event 4.3 ms before). The rows
stay their owners' to write: this is a read.

On PostgreSQL the lock is its own statement before this one. ``SELECT ... FOR UPDATE OF
ledger_accounts`` with the joins would re-read only the locked row after waiting for the lock;
the joined rows would come from the snapshot taken before the wait, missing what the transaction
that held the lock wrote (an earlier event with this id, the carried fraction). SQLite has one
writer at a time, so the read that follows its ``BEGIN IMMEDIATE`` sees everything."""
_ACCOUNT_WIDTH = len(ACCOUNT_COLUMNS)


class _Plan:
    """A plan row read by :data:`_CONTEXT` (its columns' names without the ``plan_`` prefix)."""

    def __init__(self, row: Any) -> None:
        for column in plans_table.c:
            setattr(self, column.name, getattr(row, f"plan_{column.name}"))


_EARLIER = select(events.c.event_id, events.c.request_hash, events.c.result).where(
    events.c.org_id == bindparam("org_id"), events.c.event_id.in_(bindparam("ids", expanding=True))
)
_CARRIES = select(carry.c.channel, carry.c.exact_total, carry.c.charged_cents).where(
    carry.c.org_id == bindparam("org_id"), carry.c.currency == bindparam("currency")
)


class _OneByOne(Exception):
    """A batch event was refused after it was priced: run the batch one event at a time."""


class _Accepted(NamedTuple):
    """A batch event accepted in memory, written with the rest of the batch."""

    event: UsageIn
    usage_id: uuid.UUID
    digest: str
    billed: int
    quote: PriceQuote
    amount: int
    entry: NewEntry | None
    counted: dict[str, int]


def _checked(quote: Any, channel: str) -> PriceQuote:
    """A pricing hook's answer, or 400 when no plugin priced the channel."""
    if not isinstance(quote, PriceQuote):
        raise ValidationFailed(f"no price for channel {channel!r}", code="unpriced", field="channel")
    price = quote.unit_price
    if not isinstance(price, Decimal) or not price.is_finite() or price < 0:
        raise RuntimeError(f"a pricing hook's answer is not a non-negative Decimal: {price!r}")
    return quote


def _batch_result(event: UsageIn, status: Literal["accepted", "replayed"], out: UsageOut) -> BatchResult:
    return BatchResult(event_id=event.event_id, status=status, usage_id=out.usage_id)


def _refused(event: UsageIn, refused: BillfoldError) -> BatchResult:
    return BatchResult(event_id=event.event_id, status="refused", code=refused.code, message=refused.message)


class Recorded(msgspec.Struct, frozen=True):
    result: UsageOut
    replayed: bool


def request_hash(event: UsageIn) -> str:
    return hashlib.sha256(_ENCODE.encode(event)).hexdigest()


class UsageService:
    """The only writer of usage events, carries, rollups, sessions and subscriber months."""

    def __init__(
        self,
        db: Database,
        *,
        ledger: LedgerService,
        holds: HoldService,
        orgs: OrgService,
        profiles: ProfileService,
        plans: PlanService,
        hooks: Hooks,
        channels: Mapping[str, ChannelConfig],
        currencies: Mapping[str, CurrencyConfig],
        config: UsageConfig,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.holds = holds
        self.orgs = orgs
        self.profiles = profiles
        self.plans = plans
        self.hooks = hooks
        self.channels = channels
        self.currencies = currencies
        self.config = config

    # -- one event ----------------------------------------------------------------------------------

    def _channel(self, event: UsageIn) -> ChannelConfig:
        channel = self.channels.get(event.channel)
        if channel is None:
            raise ValidationFailed(
                f"unknown channel {event.channel!r}; billing.yaml declares: {', '.join(self.channels)}",
                code="unknown_channel",
                field="channel",
            )
        if event.message_type is not None and event.message_type not in channel.message_types:
            known = ", ".join(channel.message_types) or "none"
            raise ValidationFailed(
                f"unknown message_type {event.message_type!r} for channel {event.channel!r} "
                f"(declared: {known})",
                code="unknown_message_type",
                field="message_type",
            )
        return channel

    async def record(
        self, org_id: uuid.UUID, event: UsageIn, *, conn: AsyncConnection | None = None
    ) -> Recorded:
        """Price, cap, debit (or hold) and count one event; a repeat of its ``event_id`` with the
        same body answers the first result and moves nothing, with another body is 409."""
        channel = self._channel(event)
        digest = request_hash(event)
        async with self.db.transaction(conn) as c:
            return await self._record_locked(c, org_id, event, channel, digest, locked=False)

    async def _record_locked(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        event: UsageIn,
        channel: ChannelConfig,
        digest: str,
        *,
        locked: bool,
    ) -> Recorded:
        """``locked``: the caller's transaction holds the account lock already (a batch)."""
        if not locked and conn.dialect.name == "postgresql":
            await self.ledger.lock(conn, org_id)
        context = (
            await conn.execute(
                _CONTEXT, {"org_id": org_id, "event_id": event.event_id, "channel": event.channel}
            )
        ).first()
        if context is None:
            raise NotFound("no billing account for this organization", code="account_not_found")
        account = AccountRow(*context[:_ACCOUNT_WIDTH])
        if context.request_hash is not None:
            first = context
            if first.request_hash != digest:
                raise Conflict(
                    f"event_id {event.event_id!r} was already reported with another body",
                    code="event_id_conflict",
                    field="event_id",
                )
            return Recorded(msgspec.convert(first.result, UsageOut), replayed=True)

        status, created_at = context.status, as_utc(context.created_at)
        if status == "blocked":
            raise PaymentRequired(
                "this organization is blocked and sends nothing",
                code="account_blocked",
                fix="Ask the operator to unblock the organization.",
            )
        at = now()
        plan = await self.plans.current(
            conn, org_id, created_at, at, row=None if context.plan_org_id is None else _Plan(context)
        )
        billed = await self._billed_units(conn, org_id, event, channel, at)
        quote = await self._price(conn, org_id, event, billed, account.currency, at)
        exact = quote.unit_price * billed
        if event.reserve:
            amount = ceiling(exact)  # the carry moves at capture; round-difference ≤ ceil(exact)
        else:
            carried = None if context.exact_total is None else (context.exact_total, context.charged_cents)
            amount = await carry_charge(conn, org_id, event.channel, account.currency, exact, carried=carried)
        if amount > MAX_AMOUNT:
            raise ValidationFailed("this event's price exceeds the largest amount", field="quantity")
        spend_cap = context.usage_cap_cents
        counted = await self.plans.check_and_count(
            conn,
            plan,
            Usage(
                channel=event.channel,
                units=event.quantity if channel.increment_seconds is None else billed,
                amount_cents=amount,
            ),
            unverified=status == "unverified",
            spend_cap=spend_cap,
        )
        usage_id = new_id()
        posted, hold_id = await self._move_money(conn, org_id, usage_id, event, amount, quote, billed)
        result, row = self._written(
            org_id,
            usage_id,
            event,
            digest,
            at,
            billed=billed,
            quote=quote,
            amount=amount,
            account=posted.account if posted is not None else account,
            posted=posted,
            hold_id=hold_id,
            cycle_start=plan.cycle_start,
            counted=counted,
        )
        await conn.execute(_INSERT_EVENT, row)
        if not event.reserve:
            await self._roll_up(
                conn,
                org_id,
                at,
                event.channel,
                event.message_type,
                event.category,
                quantity=event.quantity,
                billed=billed,
                amount=amount,
            )
        return Recorded(result, replayed=False)

    def _written(
        self,
        org_id: uuid.UUID,
        usage_id: uuid.UUID,
        event: UsageIn,
        digest: str,
        at: datetime.datetime,
        *,
        billed: int,
        quote: PriceQuote,
        amount: int,
        account: AccountRow,
        posted: Posted | None,
        hold_id: uuid.UUID | None,
        cycle_start: datetime.date,
        counted: dict[str, int],
    ) -> tuple[UsageOut, dict[str, Any]]:
        """An accepted event's answer and its ``usage_events`` row (``account``: the balances right
        after it)."""
        unit_price = price_text(quote.unit_price)
        result = UsageOut(
            usage_id=usage_id,
            event_id=event.event_id,
            status="reserved" if event.reserve else "accepted",
            entry=self._entry(posted),
            hold_id=hold_id,
            billing=UsageBilling(
                channel=event.channel,
                message_type=event.message_type,
                quantity=event.quantity,
                billed_quantity=billed,
                unit_price=unit_price,
                amount_cents=amount,
                currency=account.currency,
                balance=UsageBalance(
                    free=account.free_cents, reserved=account.reserved_cents, total=account.total_cents
                ),
                tier=quote.tier,
            ),
            occurred_at=event.occurred_at,
            created_at=at,
        )
        row = dict(
            id=usage_id,
            org_id=org_id,
            event_id=event.event_id,
            request_hash=digest,
            channel=event.channel,
            message_type=event.message_type,
            category=event.category,
            quantity=event.quantity,
            billed_quantity=billed,
            unit_price=unit_price,
            amount_cents=amount,
            currency=account.currency,
            status=result.status,
            hold_id=hold_id,
            entry_id=posted.entry.id if posted is not None and not event.reserve else None,
            cycle_start=cycle_start,
            counted=counted,
            tier=quote.tier,
            subscriber_id=event.subscriber_id,
            agent_id=event.agent_id,
            session_id=event.session_id,
            call_id=event.call_id,
            phone_number_id=event.phone_number_id,
            phone_number_value=event.phone_number_value,
            metadata=event.metadata,
            result=msgspec.to_builtins(result),
            occurred_at=event.occurred_at,
            created_at=at,
        )
        return result, row

    async def _billed_units(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        event: UsageIn,
        channel: ChannelConfig,
        at: datetime.datetime,
    ) -> int:
        """Units to charge, enforced here rather than trusted to the client: started increments of a
        time-billed channel; 0 for a later send of a live session; 0 for a subscriber already
        charged for this agent this month."""
        billed = channel.billed(event.quantity)
        kind = channel.message_types[event.message_type].charge if event.message_type else "unit"
        if kind == "session":
            if event.session_id is None:
                raise ValidationFailed(
                    f"message_type {event.message_type!r} is charged per session: session_id is required",
                    code="session_id_required",
                    field="session_id",
                )
            started = (
                await conn.execute(
                    select(sessions.c.started_at).where(
                        sessions.c.org_id == org_id, sessions.c.session_id == event.session_id
                    )
                )
            ).scalar_one_or_none()
            window = datetime.timedelta(hours=self.config.session_hours)
            if started is not None and as_utc(started) + window > at:
                return 0
            insert = dialect_insert(conn)(sessions).values(
                org_id=org_id, session_id=event.session_id, started_at=at
            )
            await conn.execute(
                insert.on_conflict_do_update(index_elements=["org_id", "session_id"], set_={"started_at": at})
            )
            return min(billed, 1)
        if kind == "subscriber_month":
            if event.subscriber_id is None:
                raise ValidationFailed(
                    f"message_type {event.message_type!r} is charged per subscriber and month: "
                    "subscriber_id is required",
                    code="subscriber_id_required",
                    field="subscriber_id",
                )
            inserted = await conn.execute(
                dialect_insert(conn)(subscriber_months)
                .values(
                    org_id=org_id,
                    month=period_of(at),
                    agent_id=event.agent_id or "",
                    subscriber_id=event.subscriber_id,
                )
                .on_conflict_do_nothing()
            )
            return min(billed, 1) if inserted.rowcount else 0
        return billed

    async def _price(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        event: UsageIn,
        billed: int,
        currency: str,
        at: datetime.datetime,
    ) -> PriceQuote:
        quote = await self.hooks.first(
            "billfold_price_usage",
            conn=conn,
            org_id=org_id,
            channel=event.channel,
            message_type=event.message_type,
            quantity=billed,
            currency=currency,
            at=at,
        )
        return _checked(quote, event.channel)

    async def _price_many(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        priced: list[tuple[UsageIn, ChannelConfig, str, int]],
        currency: str,
        at: datetime.datetime,
    ) -> list[PriceQuote]:
        """The quotes of a batch's events, in order: from ``billfold_price_usage_batch`` while every
        pricing plugin answers it, else one ``billfold_price_usage`` call per event."""
        if not priced:
            return []
        if self.hooks.implementers("billfold_price_usage") <= self.hooks.implementers(
            "billfold_price_usage_batch"
        ):
            items = [
                UsageItem(channel=event.channel, message_type=event.message_type, quantity=billed)
                for event, _, _, billed in priced
            ]
            answers = await self.hooks.call(
                "billfold_price_usage_batch", conn=conn, org_id=org_id, items=items, currency=currency, at=at
            )
            if None not in answers:
                quotes = []
                for position, (event, _, _, _) in enumerate(priced):
                    quote = next(
                        (answer[position] for answer in answers if answer[position] is not None), None
                    )
                    quotes.append(_checked(quote, event.channel))
                return quotes
        return [
            await self._price(conn, org_id, event, billed, currency, at) for event, _, _, billed in priced
        ]

    async def _move_money(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        usage_id: uuid.UUID,
        event: UsageIn,
        amount: int,
        quote: PriceQuote,
        billed: int,
    ) -> tuple[Posted | None, uuid.UUID | None]:
        if amount == 0:
            return None, None
        entry = self._debit(org_id, usage_id, event, amount, quote, billed)
        if event.reserve:
            hold, posted = await self.holds.hold(
                org_id,
                amount,
                expires_in_seconds=self.config.reserve_expires_in_seconds,
                conn=conn,
                description=entry.description,
                metadata=entry.metadata,
            )
            return posted, hold.id
        await self.ledger.authorize(
            conn, org_id, amount, "debit", {"description": entry.description, "metadata": entry.metadata}
        )
        return await self.ledger.post(conn, entry, require_funds=True), None

    def _debit(
        self,
        org_id: uuid.UUID,
        usage_id: uuid.UUID,
        event: UsageIn,
        amount: int,
        quote: PriceQuote,
        billed: int,
    ) -> NewEntry:
        """The ledger entry that charges an event ``amount`` (held instead when reserved)."""
        unit = self.channels[event.channel].unit
        description = (
            f"Usage: {event.channel}{'/' + event.message_type if event.message_type else ''} "
            f"{billed} {unit}{'s' if billed != 1 else ''} x {price_text(quote.unit_price)}"
        )[:500]
        return NewEntry(
            org_id=org_id,
            kind="debit",
            amount_cents=-amount,
            description=description,
            metadata={"usage_id": str(usage_id), "event_id": event.event_id, "channel": event.channel},
            call_id=event.call_id,
            phone_number_id=event.phone_number_id,
            phone_number_value=event.phone_number_value,
            reference=f"usage:{usage_id}",
        )

    def _entry(self, posted: Posted | None) -> dict[str, Any] | None:
        if posted is None:
            return None
        currency = posted.account.currency
        minor = self.currencies[currency].minor_units if currency in self.currencies else 2
        built: dict[str, Any] = msgspec.to_builtins(to_transaction(posted.entry, currency, minor))
        return built

    async def _roll_up(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        at: datetime.datetime,
        channel: str,
        message_type: str | None,
        category: str | None,
        *,
        quantity: int,
        billed: int,
        amount: int,
        events_delta: int = 1,
    ) -> None:
        await conn.execute(
            _ROLL_UP,
            {
                "org_id": org_id,
                "day": at.date(),
                "channel": channel,
                "message_type": message_type or "",
                "category": category or "",
                "events": events_delta,
                "quantity": quantity,
                "billed": billed,
                "amount": amount,
            },
        )

    # -- many events --------------------------------------------------------------------------------

    async def record_batch(
        self, org_id: uuid.UUID, batch: list[UsageIn]
    ) -> list[tuple[BatchResult, UsageOut | None]]:
        """Each event all-or-nothing, in order, the batch one transaction under one lock.

        A batch of plain events (charged per unit or started increment, none reserved) is priced
        and checked event by event in memory and written at once: one INSERT of its events, one of
        its ledger entries, one UPDATE of the account, one upsert each of its carried fractions,
        counters and daily rollups (pricing plugins still run once per event). When an event of
        such a batch is refused after it was priced (a cap, the balance, a plugin's veto), the
        pricing may have left state behind (the tiers plugin's volume), so the transaction is rolled
        back and the batch runs again one event at a time, each in a savepoint: a refused event
        then leaves nothing. Other batches (reserved sends, per-session or per-subscriber message
        types) always run one event at a time."""
        if len(batch) > self.config.max_batch:
            raise ValidationFailed(f"at most {self.config.max_batch} events in one batch", field="events")
        if all(self._plain(event) for event in batch):
            try:
                return await self._batch_at_once(org_id, batch)
            except _OneByOne:
                pass
        return await self._batch_one_by_one(org_id, batch)

    def _plain(self, event: UsageIn) -> bool:
        """An event the batch can price and count in memory: not reserved, charged per unit."""
        channel = self.channels.get(event.channel)
        if event.reserve or channel is None:
            return not event.reserve  # an unknown channel is refused before anything moves
        kind = (
            channel.message_types[event.message_type].charge
            if event.message_type in channel.message_types
            else "unit"
        )
        return kind == "unit"

    async def _batch_at_once(
        self, org_id: uuid.UUID, batch: list[UsageIn]
    ) -> list[tuple[BatchResult, UsageOut | None]]:
        results: list[tuple[BatchResult, UsageOut | None]] = []
        async with self.db.transaction() as conn:
            account = await self.ledger.lock(conn, org_id)
            context = (
                await conn.execute(_CONTEXT, {"org_id": org_id, "event_id": None, "channel": None})
            ).one()
            earlier = {
                row.event_id: (row.request_hash, row.result)
                for row in (
                    await conn.execute(_EARLIER, {"org_id": org_id, "ids": list({e.event_id for e in batch})})
                ).all()
            }
            carried: dict[str, tuple[str, int]] = {
                row.channel: (row.exact_total, row.charged_cents)
                for row in (
                    await conn.execute(_CARRIES, {"org_id": org_id, "currency": account.currency})
                ).all()
            }
            status, created_at = context.status, as_utc(context.created_at)
            at = now()
            plan = await self.plans.current(
                conn, org_id, created_at, at, row=None if context.plan_org_id is None else _Plan(context)
            )
            counters = await self.plans.counters_now(conn, plan)
            free = account.free_cents
            accepted: list[_Accepted] = []
            carries_moved: set[str] = set()
            bumps: dict[str, tuple[int, int]] = {}  # counter → (delta, level reached)
            # Which events are answered without a price (refused before anything moves, or a repeat),
            # and which are priced. An event priced here is accepted below, or the batch runs again
            # one event at a time: so a later repeat of its event_id in the batch is its replay.
            priced: list[tuple[UsageIn, ChannelConfig, str, int]] = []  # event, channel, digest, billed
            in_batch: dict[str, tuple[str, int]] = {}  # event_id → (request hash, index in priced)
            # per event: ("answered", result, answer) or ("accepted" | "replayed", index in priced)
            outcomes: list[tuple[Any, ...]] = []
            for event in batch:
                try:
                    channel = self._channel(event)
                    digest = request_hash(event)
                    first_hash: str | None = None
                    if event.event_id in in_batch:
                        first_hash, index = in_batch[event.event_id]
                    elif event.event_id in earlier:
                        first_hash, first_result = earlier[event.event_id]
                    if first_hash is not None and first_hash != digest:
                        raise Conflict(
                            f"event_id {event.event_id!r} was already reported with another body",
                            code="event_id_conflict",
                            field="event_id",
                        )
                    if event.event_id in in_batch:
                        outcomes.append(("replayed", index))
                        continue
                    if first_hash is not None:
                        out = msgspec.convert(first_result, UsageOut)
                        outcomes.append(("answered", _batch_result(event, "replayed", out), out))
                        continue
                    if status == "blocked":
                        raise PaymentRequired(
                            "this organization is blocked and sends nothing",
                            code="account_blocked",
                            fix="Ask the operator to unblock the organization.",
                        )
                except BillfoldError as refused:
                    outcomes.append(("answered", _refused(event, refused), None))
                    continue
                in_batch[event.event_id] = (digest, len(priced))
                outcomes.append(("accepted", len(priced)))
                priced.append((event, channel, digest, channel.billed(event.quantity)))
            try:
                quotes = await self._price_many(conn, org_id, priced, account.currency, at)
            except BillfoldError:  # a plugin refused to price one: that event is refused alone
                raise _OneByOne from None
            for (event, channel, digest, billed), quote in zip(priced, quotes, strict=True):
                # A refusal from here sends the whole batch one event at a time.
                exact = quote.unit_price * billed
                before = carried.get(event.channel)
                total = exact if before is None else Decimal(before[0]) + exact
                charged = 0 if before is None else before[1]
                amount = rounded(total) - charged
                if amount > MAX_AMOUNT or (amount and free - amount < -account.overage_limit_cents):
                    raise _OneByOne
                moves = self.plans.counted(
                    plan,
                    Usage(
                        channel=event.channel,
                        units=event.quantity if channel.increment_seconds is None else billed,
                        amount_cents=amount,
                    ),
                    unverified=status == "unverified",
                    spend_cap=context.usage_cap_cents,
                )
                if self.plans.refusal(plan, moves, counters) is not None:
                    raise _OneByOne
                usage_id = new_id()
                entry = self._debit(org_id, usage_id, event, amount, quote, billed) if amount else None
                if entry is not None:
                    try:
                        await self.ledger.authorize(
                            conn,
                            org_id,
                            amount,
                            "debit",
                            {"description": entry.description, "metadata": entry.metadata},
                        )
                    except BillfoldError:
                        raise _OneByOne from None
                carried[event.channel] = (str(total), charged + amount)
                carries_moved.add(event.channel)
                counted = {}
                for name, delta, reached in await self.plans.advance(conn, plan, moves, counters):
                    counted[name] = delta
                    total_delta, _ = bumps.get(name, (0, 0))
                    bumps[name] = (total_delta + delta, reached)
                free -= amount
                accepted.append(_Accepted(event, usage_id, digest, billed, quote, amount, entry, counted))
            if accepted:
                posted = iter(
                    await self.ledger.post_many(
                        conn, account, [a.entry for a in accepted if a.entry is not None], require_funds=True
                    )
                )
                rows: list[dict[str, Any]] = []
                written: list[UsageOut] = []
                balance = account
                for item in accepted:
                    one = next(posted) if item.entry is not None else None
                    if one is not None:
                        balance = one.account
                    result, row = self._written(
                        org_id,
                        item.usage_id,
                        item.event,
                        item.digest,
                        at,
                        billed=item.billed,
                        quote=item.quote,
                        amount=item.amount,
                        account=balance,
                        posted=one,
                        hold_id=None,
                        cycle_start=plan.cycle_start,
                        counted=item.counted,
                    )
                    rows.append(row)
                    written.append(result)
                await conn.execute(_INSERT_EVENT, rows)
                await store_carries(
                    conn, org_id, account.currency, {name: carried[name] for name in carries_moved}
                )
                if bumps:
                    await self.plans.bump(conn, plan, [(name, d, r) for name, (d, r) in bumps.items()])
                await self._roll_up_many(conn, org_id, at, accepted)
        # In the batch's order; a repeat of an event accepted earlier in the batch answers its result.
        for event, outcome in zip(batch, outcomes, strict=True):
            if outcome[0] == "answered":
                results.append((outcome[1], outcome[2]))
            else:
                out = written[outcome[1]]
                results.append((_batch_result(event, outcome[0], out), out))
        return results

    async def _roll_up_many(
        self, conn: AsyncConnection, org_id: uuid.UUID, at: datetime.datetime, accepted: list[_Accepted]
    ) -> None:
        """The daily rollups of a batch's accepted events, one row per key."""
        sums: dict[tuple[str, str, str], list[int]] = {}
        for item in accepted:
            key = (item.event.channel, item.event.message_type or "", item.event.category or "")
            total = sums.setdefault(key, [0, 0, 0, 0])
            total[0] += 1
            total[1] += item.event.quantity
            total[2] += item.billed
            total[3] += item.amount
        await conn.execute(
            _ROLL_UP,
            [
                {
                    "org_id": org_id,
                    "day": at.date(),
                    "channel": channel,
                    "message_type": message_type,
                    "category": category,
                    "events": count,
                    "quantity": quantity,
                    "billed": billed,
                    "amount": amount,
                }
                for (channel, message_type, category), (count, quantity, billed, amount) in sums.items()
            ],
        )

    async def _batch_one_by_one(
        self, org_id: uuid.UUID, batch: list[UsageIn]
    ) -> list[tuple[BatchResult, UsageOut | None]]:
        """Each event in its own savepoint, after the account lock."""
        results: list[tuple[BatchResult, UsageOut | None]] = []
        async with self.db.transaction() as conn:
            await self.ledger.lock(conn, org_id)
            for event in batch:
                try:
                    channel = self._channel(event)
                    async with conn.begin_nested():
                        recorded = await self._record_locked(
                            conn, org_id, event, channel, request_hash(event), locked=True
                        )
                except BillfoldError as refused:
                    results.append((_refused(event, refused), None))
                    continue
                out = recorded.result
                results.append(
                    (_batch_result(event, "replayed" if recorded.replayed else "accepted", out), out)
                )
        return results

    # -- two-phase sends ----------------------------------------------------------------------------

    async def settle(self, org_id: uuid.UUID, usage_id: uuid.UUID, settle: SettleIn) -> UsageOut:
        """Capture a reserved send's price (delivered, ``quantity`` ≤ reserved) or release it
        (failed), once; the counters it moved are taken back on failure."""
        async with self.db.transaction() as conn:
            await self.ledger.lock(conn, org_id)
            row = (
                await conn.execute(select(events).where(events.c.id == usage_id, events.c.org_id == org_id))
            ).first()
            if row is None:
                raise NotFound("usage event not found", code="usage_not_found", field="usage_id")
            if row.status != "reserved":
                raise Conflict(f"this usage is already {row.status}", code=f"usage_{row.status}")
            at = now()
            result = msgspec.convert(row.result, UsageOut)
            if settle.outcome == "failed":
                failed = await self._fail(conn, row, result, at, status="failed")
                assert failed is not None  # the row is locked behind the account and was reserved
                return failed
            quantity = row.quantity if settle.quantity is None else settle.quantity
            if quantity > row.quantity:
                raise ValidationFailed(
                    f"quantity {quantity} exceeds the reserved {row.quantity}",
                    code="quantity_exceeds_reserved",
                    field="quantity",
                )
            channel = self.channels.get(row.channel)
            billed = channel.billed(quantity) if channel is not None else quantity
            billed = min(billed, row.billed_quantity)
            exact = Decimal(row.unit_price) * billed
            amount = await carry_charge(conn, org_id, row.channel, row.currency, exact)
            posted: Posted | None = None
            if row.hold_id is not None:
                if amount:
                    _, posted = await self.holds.capture(org_id, row.hold_id, amount, conn=conn)
                else:
                    _, posted = await self.holds.release(org_id, row.hold_id, conn=conn)
            # The counters moved by the reservation now keep what was delivered and charged.
            units = quantity if channel is None or channel.increment_seconds is None else billed
            counted = dict(row.counted or {})
            kept = {name: (units if _is_unit_counter(name) else amount) for name in counted}
            await self.plans.uncount(
                conn, org_id, row.cycle_start, {name: counted[name] - kept[name] for name in counted}
            )
            if billed < row.billed_quantity:
                await _released(conn, row, row.billed_quantity - billed)
            account = posted.account if posted is not None else await self.ledger.account(org_id, conn=conn)
            settled = msgspec.structs.replace(
                result,
                status="delivered",
                entry=self._entry(posted) if amount else None,
                billing=msgspec.structs.replace(
                    result.billing,
                    quantity=quantity,
                    billed_quantity=billed,
                    amount_cents=amount,
                    balance=UsageBalance(
                        free=account.free_cents, reserved=account.reserved_cents, total=account.total_cents
                    ),
                ),
            )
            await conn.execute(
                update(events)
                .where(events.c.id == usage_id)
                .values(
                    status="delivered",
                    amount_cents=amount,
                    billed_quantity=billed,
                    quantity=quantity,
                    entry_id=posted.entry.id if posted is not None and amount else None,
                    settled_at=at,
                    counted=kept,
                    result=msgspec.to_builtins(settled),
                )
            )
            await self._roll_up(
                conn,
                org_id,
                at,
                row.channel,
                row.message_type,
                row.category,
                quantity=quantity,
                billed=billed,
                amount=amount,
            )
            return settled

    async def _fail(
        self, conn: AsyncConnection, row: Any, result: UsageOut, at: datetime.datetime, *, status: str
    ) -> UsageOut | None:
        """End a reservation without a charge (failed: release its hold; expired: the hold already
        ran out) and take back its counters, once: None when it was no longer reserved."""
        posted: Posted | None = None
        if row.hold_id is not None and status == "failed":
            _, posted = await self.holds.release(row.org_id, row.hold_id, conn=conn)
        account = posted.account if posted is not None else await self.ledger.account(row.org_id, conn=conn)
        failed = msgspec.structs.replace(
            result,
            status=status,
            entry=None,
            billing=msgspec.structs.replace(
                result.billing,
                amount_cents=0,
                balance=UsageBalance(
                    free=account.free_cents, reserved=account.reserved_cents, total=account.total_cents
                ),
            ),
        )
        ended = await conn.execute(
            update(events)
            .where(events.c.id == row.id, events.c.status == "reserved")
            .values(
                status=status, amount_cents=0, settled_at=at, counted={}, result=msgspec.to_builtins(failed)
            )
        )
        if ended.rowcount != 1:
            return None
        await self.plans.uncount(conn, row.org_id, row.cycle_start, dict(row.counted or {}))
        await _released(conn, row, row.billed_quantity)
        return failed

    async def expire_reserved(self, *, limit: int = 100) -> int:
        """Reserved sends whose hold expired: the send is ``expired`` and its counters are taken back."""
        async with self.db.transaction() as conn:
            rows = (
                await conn.execute(
                    select(events)
                    .join(holds, holds.c.id == events.c.hold_id)
                    .where(and_(events.c.status == "reserved", holds.c.status == "expired"))
                    .limit(limit)
                )
            ).all()
            expired = 0
            for row in rows:
                await self.ledger.lock(conn, row.org_id)
                if await self._fail(
                    conn, row, msgspec.convert(row.result, UsageOut), now(), status="expired"
                ):
                    expired += 1
            return expired

    async def get(self, org_id: uuid.UUID, usage_id: uuid.UUID) -> UsageOut:
        async with self.db.reading() as conn:
            row = (
                await conn.execute(
                    select(events.c.result).where(events.c.id == usage_id, events.c.org_id == org_id)
                )
            ).first()
        if row is None:
            raise NotFound("usage event not found", code="usage_not_found", field="usage_id")
        return msgspec.convert(row.result, UsageOut)

    # -- the worker ---------------------------------------------------------------------------------

    @hookimpl
    def billfold_worker_tasks(self) -> list[WorkerTask]:
        return [WorkerTask(name="usage-expired-reservations", interval_seconds=5.0, run=self.expire_reserved)]


async def _released(conn: AsyncConnection, row: Any, billed: int) -> None:
    """A reservation gave back ``billed`` units (failed, expired, or delivered fewer): plugins that
    counted them at acceptance (the tiers plugin's volume) take them back, in this transaction."""
    await emit(
        conn,
        "usage.released",
        {
            "usage_id": str(row.id),
            "channel": row.channel,
            "message_type": row.message_type,
            "billed_quantity": billed,
            "month": period_of(as_utc(row.created_at)),
        },
        org_id=row.org_id,
    )


def _is_unit_counter(name: str) -> bool:
    """Counters of units (the messages cap, the internal caps); the others count minor units."""
    return name == "messages" or name.startswith("unverified:")
