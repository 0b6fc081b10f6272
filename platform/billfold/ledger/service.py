"""The ledger service: the only code that changes balances.

Every balance change is one conditional UPDATE of the organization's account row plus one INSERT
of an immutable entry (SQLAlchemy Core on the shared engine: the ORM session costs several times
the SQL on the debit hot path). The account row lock serialises writers per organization, so entry
ids of one organization follow commit order. A method given ``conn`` joins the caller's
transaction; without one it owns its unit of work. A charge without a connection is, on
PostgreSQL, one self-committing statement when nothing else must happen inside it.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.clock import now
from billfold.db import Database, driver_connection
from billfold.errors import Conflict, NotFound, PaymentRequired, ValidationFailed
from billfold.hookspecs import Direction
from billfold.ledger.rows import (
    ACCOUNT_COLUMNS,
    ENTRY_COLUMNS,
    AccountRow,
    EntryPage,
    EntryRow,
    Posted,
    accounts,
    entries,
    entry_row,
)
from billfold.plugins import Hooks

MAX_AMOUNT = 2**53 - 1
"""The largest amount any single write accepts (exact in every JSON client)."""

_POST_POSTGRES = """
WITH account AS (
    UPDATE ledger_accounts
    SET free_cents = free_cents + $1::bigint,
        reserved_cents = reserved_cents + $2::bigint,
        entry_count = entry_count + 1,
        updated_at = $3::timestamptz
    WHERE org_id = $4::uuid
      AND (NOT $5::boolean OR free_cents + $1::bigint >= -overage_limit_cents)
      AND (NOT $6::boolean OR watch_below_cents IS NULL OR free_cents + $1::bigint >= watch_below_cents)
    RETURNING org_id, currency, free_cents, reserved_cents, overage_limit_cents, watch_below_cents,
              watch_above_cents
), entry AS (
    INSERT INTO ledger_entries (
        org_id, kind, amount_cents, reserved_delta_cents, free_after_cents, reserved_after_cents,
        description, metadata, call_id, phone_number_id, phone_number_value, hold_id, reference,
        created_at)
    SELECT org_id, $7::varchar, $8::bigint, $2::bigint, free_cents, reserved_cents,
           $9::varchar, $10::text::jsonb, $11::bigint, $12::bigint, $13::varchar, $14::uuid,
           $15::varchar, $3::timestamptz
    FROM account
    RETURNING id
)
SELECT account.org_id, account.currency, account.free_cents, account.reserved_cents,
       account.overage_limit_cents, account.watch_below_cents, account.watch_above_cents, entry.id
FROM account, entry
"""
"""The PostgreSQL form of a posting (same semantics as the Core statements of ``_write_core``), in
asyncpg's own parameter style so that it runs as it is both through SQLAlchemy (``exec_driver_sql``,
inside a transaction) and on the pooled driver connection (a charge alone, self-committing);
parameters in the order of ``_post_parameters``. With $6 (cross no level) it also refuses a write
that would take the free balance below the account's next watched level: a charge alone must know
that no in-transaction reaction was due."""


_ACCOUNT_POSTGRES = (
    "SELECT org_id, currency, free_cents, reserved_cents, overage_limit_cents, watch_below_cents, "
    "watch_above_cents FROM ledger_accounts WHERE org_id = $1"
)


_LOCK = select(*ACCOUNT_COLUMNS).where(accounts.c.org_id == bindparam("org_id"))
_LOCK_POSTGRES = _LOCK.with_for_update()
"""Built once: every usage event takes the account lock first."""


_MOVE_ACCOUNT = (
    update(accounts)
    .where(accounts.c.org_id == bindparam("account"))
    .values(
        free_cents=accounts.c.free_cents + bindparam("free_delta"),
        reserved_cents=accounts.c.reserved_cents + bindparam("reserved_delta"),
        entry_count=accounts.c.entry_count + bindparam("count"),
        updated_at=bindparam("at"),
    )
    .returning(*ACCOUNT_COLUMNS)
)
_INSERT_ENTRIES = entries.insert().returning(entries.c.reference, entries.c.id)
"""Several entries at once (:meth:`LedgerService.post_many`), their ids by their references: one
statement on both databases (asking for the ids in the order given,
``sort_by_parameter_order=True``, made SQLAlchemy write one row per statement on SQLite)."""


class NewEntry(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of an entry about to be written (its id and running balances come from the write)."""

    org_id: uuid.UUID
    kind: str
    amount_cents: int
    reserved_delta_cents: int = 0
    description: str = ""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    call_id: int | None = None
    phone_number_id: int | None = None
    phone_number_value: str | None = None
    hold_id: uuid.UUID | None = None
    reference: str | None = None
    created_at: datetime.datetime = msgspec.field(default_factory=now)

    @property
    def free_delta(self) -> int:
        return self.amount_cents - self.reserved_delta_cents

    def written(self, entry_id: int, account: AccountRow) -> EntryRow:
        return EntryRow(
            id=entry_id,
            free_after_cents=account.free_cents,
            reserved_after_cents=account.reserved_cents,
            **msgspec.structs.asdict(self),
        )


def _post_parameters(entry: NewEntry, *, require_funds: bool, cross_no_level: bool) -> tuple[Any, ...]:
    return (
        entry.free_delta,
        entry.reserved_delta_cents,
        entry.created_at,
        entry.org_id,
        require_funds,
        cross_no_level,
        entry.kind,
        entry.amount_cents,
        entry.description,
        msgspec.json.encode(entry.metadata).decode(),
        entry.call_id,
        entry.phone_number_id,
        entry.phone_number_value,
        entry.hold_id,
        entry.reference,
    )


def _posted_row(entry: NewEntry, row: Any) -> tuple[AccountRow, int]:
    """The account and entry id from a row of _POST_POSTGRES (SQLAlchemy Row or asyncpg Record)."""
    account = AccountRow(
        org_id=entry.org_id,
        currency=row[1],
        free_cents=row[2],
        reserved_cents=row[3],
        overage_limit_cents=row[4],
        watch_below_cents=row[5],
        watch_above_cents=row[6],
    )
    return account, row[7]


def watch_bounds(levels: Iterable[int], free_cents: int) -> tuple[int | None, int | None]:
    """(highest level ≤ free, lowest level > free): the next downward and upward crossings."""
    below = max((level for level in levels if level <= free_cents), default=None)
    above = min((level for level in levels if level > free_cents), default=None)
    return below, above


def crossed_levels(levels: Iterable[int], before: int, after: int) -> tuple[list[int], Direction | None]:
    """The levels a move of the free balance from ``before`` to ``after`` crossed, highest first.

    Down: before ≥ level > after. Up: before < level ≤ after."""
    if after < before:
        down = sorted((lv for lv in levels if after < lv <= before), reverse=True)
        return down, "down" if down else None
    if after > before:
        up = sorted((lv for lv in levels if before < lv <= after), reverse=True)
        return up, "up" if up else None
    return [], None


def _uncounted(kind: str) -> None:
    """Entries are not counted (no metrics in this process)."""


def positive_amount(amount_cents: int, field: str = "amount_cents") -> None:
    if not 1 <= amount_cents <= MAX_AMOUNT:
        raise ValidationFailed(f"{field} must be an integer between 1 and {MAX_AMOUNT}", field=field)


class LedgerService:
    """Accounts, postings and reads. Holds live in :class:`billfold.ledger.holds.HoldService`."""

    def __init__(self, db: Database, hooks: Hooks) -> None:
        self.db = db
        self.hooks = hooks
        self.count_entry: Callable[[str], None] = _uncounted
        """Called with the kind of each entry written (the metrics' counter while the app serves)."""

    # -- accounts --------------------------------------------------------------------------------

    async def open_account(self, conn: AsyncConnection, org_id: uuid.UUID, currency: str) -> AccountRow:
        await conn.execute(accounts.insert().values(org_id=org_id, currency=currency, watch_levels=[]))
        return await self.account(org_id, conn=conn)

    async def account(self, org_id: uuid.UUID, *, conn: AsyncConnection | None = None) -> AccountRow:
        """The organization's balances (404 without an account). Read on its own on PostgreSQL, it
        is one constant statement on the pool's driver connection: the balance is read far more
        often than it is written, and SQLAlchemy's connect/execute/close around one SELECT cost
        more CPU than the whole rest of the request (bench/run.py: GET balance at 1.8 ms of server
        CPU against 1.05 ms for a charge, which already took this path)."""
        if conn is None and self.db.is_postgres:
            async with driver_connection(self.db.engine) as driver:
                row = await driver.fetchrow(_ACCOUNT_POSTGRES, org_id)
        else:
            async with self.db.reading(conn) as c:
                row = (await c.execute(select(*ACCOUNT_COLUMNS).where(accounts.c.org_id == org_id))).first()
        if row is None:
            raise NotFound("no billing account for this organization", code="account_not_found")
        return AccountRow(*row)

    async def lock(self, conn: AsyncConnection, org_id: uuid.UUID) -> AccountRow:
        """Lock the account row for the rest of the caller's transaction. A transaction that will
        change an organization's other rows and its balance takes this first: every writer then
        locks in the same order (account, then the rest), as a debit does."""
        stmt = _LOCK_POSTGRES if conn.dialect.name == "postgresql" else _LOCK
        row = (await conn.execute(stmt, {"org_id": org_id})).first()
        if row is None:
            raise NotFound("no billing account for this organization", code="account_not_found")
        return AccountRow(*row)

    async def set_overage_limit(
        self, org_id: uuid.UUID, limit_cents: int, *, conn: AsyncConnection | None = None
    ) -> AccountRow:
        if not 0 <= limit_cents <= MAX_AMOUNT:
            raise ValidationFailed(
                f"overage_limit_cents must be between 0 and {MAX_AMOUNT}", field="overage_limit_cents"
            )
        async with self.db.transaction(conn) as c:
            await self.account(org_id, conn=c)
            await c.execute(
                update(accounts).where(accounts.c.org_id == org_id).values(overage_limit_cents=limit_cents)
            )
            return await self.account(org_id, conn=c)

    async def refresh_levels(self, org_id: uuid.UUID, *, conn: AsyncConnection | None = None) -> list[int]:
        """Ask every plugin which free-balance levels it watches and store them on the account."""
        async with self.db.transaction(conn) as c:
            # Lock the account first: a concurrent refresh (a settings change, the CLI) must not
            # store an answer computed from settings older than ours.
            free = (
                await c.execute(
                    select(accounts.c.free_cents).where(accounts.c.org_id == org_id).with_for_update()
                )
            ).scalar_one_or_none()
            if free is None:
                raise NotFound("no billing account for this organization", code="account_not_found")
            levels: set[int] = set()
            for answer in await self.hooks.call("billfold_balance_levels", conn=c, org_id=org_id):
                if answer is None:
                    continue
                levels.update(
                    int(level) for level in (answer if isinstance(answer, list | tuple) else [answer])
                )
            ordered = sorted(levels, reverse=True)
            below, above = watch_bounds(ordered, free)
            await c.execute(
                update(accounts)
                .where(accounts.c.org_id == org_id)
                .values(watch_levels=ordered, watch_below_cents=below, watch_above_cents=above)
            )
            return ordered

    # -- the one write path -------------------------------------------------------------------------

    async def post(self, conn: AsyncConnection, entry: NewEntry, *, require_funds: bool) -> Posted:
        """Write ``entry`` in the caller's transaction: move the balances, call the hooks that must
        run inside the write, or raise PaymentRequired when ``require_funds`` and the free balance
        (plus overage) is short."""
        write = self._write_postgres if conn.dialect.name == "postgresql" else self._write_core
        written = await write(conn, entry, require_funds=require_funds and entry.free_delta < 0)
        if written is None:
            raise await self._refusal(conn, entry.org_id, entry.free_delta)
        account, entry_id = written
        self.count_entry(entry.kind)
        posted = Posted(entry=entry.written(entry_id, account), account=account)
        if self.hooks.implemented("billfold_ledger_entry_written"):
            await self.hooks.call(
                "billfold_ledger_entry_written", conn=conn, entry=posted.entry, account=account
            )
        if self._may_cross(entry.free_delta, account):
            posted = await self._crossed(conn, posted, entry.free_delta)
        return posted

    async def post_many(
        self, conn: AsyncConnection, account: AccountRow, entries: list[NewEntry], *, require_funds: bool
    ) -> list[Posted]:
        """Write ``entries`` of one organization, in order, in the caller's transaction, which holds
        the account lock (``account`` is the row as that lock read it): one UPDATE of the account
        and one INSERT of the entries, their running balances computed here. An entry that reaches a
        watched level is posted on its own (:meth:`post` calls ``billfold_balance_crossed``), the
        runs before and after it at once. PaymentRequired when ``require_funds`` and the free
        balance (plus overage) would run short at any entry, before anything is written. Each entry
        has its own ``reference`` (the ids come back by reference)."""
        references = {entry.reference for entry in entries}
        if None in references or len(references) != len(entries):
            raise ValueError("post_many needs a distinct reference on every entry")
        free = account.free_cents
        for entry in entries:
            free += entry.free_delta
            if require_funds and entry.free_delta < 0 and free < -account.overage_limit_cents:
                raise await self._refusal(conn, entry.org_id, entry.free_delta)
        posted: list[Posted] = []
        run: list[NewEntry] = []
        free, reserved = account.free_cents, account.reserved_cents
        for entry in entries:
            free += entry.free_delta
            reserved += entry.reserved_delta_cents
            after = msgspec.structs.replace(account, free_cents=free, reserved_cents=reserved)
            if self._may_cross(entry.free_delta, after):
                account = await self._post_run(conn, account, run, posted)
                run = []
                one = await self.post(conn, entry, require_funds=require_funds)
                posted.append(one)
                account = one.account
                continue
            run.append(entry)
        await self._post_run(conn, account, run, posted)
        return posted

    async def _post_run(
        self, conn: AsyncConnection, account: AccountRow, run: list[NewEntry], posted: list[Posted]
    ) -> AccountRow:
        """Write ``run`` (crossing no watched level) at once; append what was posted; the account after."""
        if not run:
            return account
        free_delta = sum(entry.free_delta for entry in run)
        row = (
            await conn.execute(
                _MOVE_ACCOUNT,
                {
                    "account": account.org_id,
                    "free_delta": free_delta,
                    "reserved_delta": sum(entry.reserved_delta_cents for entry in run),
                    "count": len(run),
                    "at": run[-1].created_at,
                },
            )
        ).one()
        after = AccountRow(*row)
        rows: list[dict[str, Any]] = []
        written: list[tuple[NewEntry, AccountRow]] = []
        free, reserved = account.free_cents, account.reserved_cents
        for entry in run:
            free += entry.free_delta
            reserved += entry.reserved_delta_cents
            balance = msgspec.structs.replace(after, free_cents=free, reserved_cents=reserved)
            written.append((entry, balance))
            rows.append(
                {**msgspec.structs.asdict(entry), "free_after_cents": free, "reserved_after_cents": reserved}
            )
        if (free, reserved) != (after.free_cents, after.reserved_cents):
            raise RuntimeError("the account moved under its lock")  # the caller must hold the lock
        ids = {
            reference: entry_id for reference, entry_id in (await conn.execute(_INSERT_ENTRIES, rows)).all()
        }
        for entry, balance in written:
            entry_id = ids[entry.reference]
            self.count_entry(entry.kind)
            one = Posted(entry=entry.written(entry_id, balance), account=balance)
            if self.hooks.implemented("billfold_ledger_entry_written"):
                await self.hooks.call(
                    "billfold_ledger_entry_written", conn=conn, entry=one.entry, account=balance
                )
            posted.append(one)
        return after

    @staticmethod
    def _may_cross(free_delta: int, account: AccountRow) -> bool:
        """From the bounds stored before this write: did it reach the next level either way?"""
        if free_delta < 0:
            return account.watch_below_cents is not None and account.free_cents < account.watch_below_cents
        if free_delta > 0:
            return account.watch_above_cents is not None and account.free_cents >= account.watch_above_cents
        return False

    async def _crossed(self, conn: AsyncConnection, posted: Posted, free_delta: int) -> Posted:
        account = posted.account
        levels = (
            await conn.execute(select(accounts.c.watch_levels).where(accounts.c.org_id == account.org_id))
        ).scalar_one() or []
        before = account.free_cents - free_delta
        crossed, direction = crossed_levels(levels, before, account.free_cents)
        below, above = watch_bounds(levels, account.free_cents)
        await conn.execute(
            update(accounts)
            .where(accounts.c.org_id == account.org_id)
            .values(watch_below_cents=below, watch_above_cents=above)
        )
        account = msgspec.structs.replace(account, watch_below_cents=below, watch_above_cents=above)
        posted = Posted(entry=posted.entry, account=account)
        if direction is not None:
            await self.hooks.call(
                "billfold_balance_crossed",
                conn=conn,
                entry=posted.entry,
                account=account,
                levels=crossed,
                direction=direction,
            )
        return posted

    async def _write_core(
        self, conn: AsyncConnection, entry: NewEntry, *, require_funds: bool
    ) -> tuple[AccountRow, int] | None:
        """The portable write path (SQLite): the conditional UPDATE, then the entry INSERT."""
        stmt = (
            update(accounts)
            .where(accounts.c.org_id == entry.org_id)
            .values(
                free_cents=accounts.c.free_cents + entry.free_delta,
                reserved_cents=accounts.c.reserved_cents + entry.reserved_delta_cents,
                entry_count=accounts.c.entry_count + 1,
                updated_at=entry.created_at,
            )
            .returning(*ACCOUNT_COLUMNS)
        )
        if require_funds:
            stmt = stmt.where(accounts.c.free_cents + entry.free_delta >= -accounts.c.overage_limit_cents)
        row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        account = AccountRow(*row)
        entry_id = (
            await conn.execute(
                entries.insert()
                .values(
                    **msgspec.structs.asdict(entry),
                    free_after_cents=account.free_cents,
                    reserved_after_cents=account.reserved_cents,
                )
                .returning(entries.c.id)
            )
        ).scalar_one()
        return account, entry_id

    async def _write_postgres(
        self, conn: AsyncConnection, entry: NewEntry, *, require_funds: bool
    ) -> tuple[AccountRow, int] | None:
        """The PostgreSQL write path: the same UPDATE and INSERT as one constant statement
        (one round trip, no compilation)."""
        params = _post_parameters(entry, require_funds=require_funds, cross_no_level=False)
        row = (await conn.exec_driver_sql(_POST_POSTGRES, params)).first()
        return None if row is None else _posted_row(entry, row)

    async def _refusal(self, conn: AsyncConnection, org_id: uuid.UUID, free_delta: int) -> PaymentRequired:
        current = await self.account(org_id, conn=conn)  # raises 404 when there is no account
        return PaymentRequired(
            f"insufficient funds: {-free_delta} needed, {current.free_cents} available",
            code="insufficient_funds",
            fix="Top up the balance or enable auto-reload, then retry.",
            extra={
                "balance_cents": current.free_cents,
                "required_cents": -free_delta,
                "currency": current.currency,
            },
        )

    async def authorize(
        self, conn: AsyncConnection, org_id: uuid.UUID, amount_cents: int, kind: str, context: dict[str, Any]
    ) -> None:
        """Let plugins refuse a debit or hold (402) before the balance moves."""
        if self.hooks.implemented("billfold_authorize_debit"):
            await self.hooks.call(
                "billfold_authorize_debit",
                conn=conn,
                org_id=org_id,
                amount_cents=amount_cents,
                kind=kind,
                context=context,
            )

    def debits_need_transaction(self) -> bool:
        """True while a plugin implements a hook that must run inside every debit's transaction."""
        return self.hooks.implemented("billfold_authorize_debit") or self.hooks.implemented(
            "billfold_ledger_entry_written"
        )

    # -- money in and out ---------------------------------------------------------------------------

    async def charge(
        self,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        conn: AsyncConnection | None = None,
        description: str = "",
        metadata: dict[str, Any] | None = None,
        call_id: int | None = None,
        phone_number_id: int | None = None,
        phone_number_value: str | None = None,
        reference: str | None = None,
        kind: str = "debit",
    ) -> Posted:
        """Debit the free balance, or raise PaymentRequired (402) when it is short.

        Without ``conn``, on PostgreSQL, while no plugin must run inside debits
        (``billfold_authorize_debit``, ``billfold_ledger_entry_written``), the conditional UPDATE and
        the entry INSERT run as one self-committing statement: the account row is locked only while
        PostgreSQL executes it, not across round trips to this process. That statement refuses a
        debit that would cross a watched level; such a debit, and one refused for funds, is then
        redone as a transaction, which calls ``billfold_balance_crossed`` or raises the 402."""
        positive_amount(amount_cents)
        entry = NewEntry(
            org_id=org_id,
            kind=kind,
            amount_cents=-amount_cents,
            description=description,
            metadata=metadata or {},
            call_id=call_id,
            phone_number_id=phone_number_id,
            phone_number_value=phone_number_value,
            reference=reference,
        )
        if conn is None and self.db.is_postgres and not self.debits_need_transaction():
            params = _post_parameters(entry, require_funds=True, cross_no_level=True)
            async with driver_connection(self.db.engine) as driver:
                row = await driver.fetchrow(_POST_POSTGRES, *params)
            if row is not None:
                account, entry_id = _posted_row(entry, row)
                self.count_entry(entry.kind)
                return Posted(entry=entry.written(entry_id, account), account=account)
        async with self.db.transaction(conn) as c:
            await self.authorize(
                c, org_id, amount_cents, "debit", {"description": description, "metadata": metadata}
            )
            return await self.post(c, entry, require_funds=True)

    async def credit(
        self,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        conn: AsyncConnection | None = None,
        description: str = "",
        metadata: dict[str, Any] | None = None,
        reference: str | None = None,
    ) -> Posted:
        """Add money (a payment). ``reference`` makes the credit unique per organization."""
        positive_amount(amount_cents)
        async with self.db.transaction(conn) as c:
            return await self.post(
                c,
                NewEntry(
                    org_id=org_id,
                    kind="credit",
                    amount_cents=amount_cents,
                    description=description,
                    metadata=metadata or {},
                    reference=reference,
                ),
                require_funds=False,
            )

    async def adjust(
        self,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        conn: AsyncConnection | None = None,
        description: str,
        metadata: dict[str, Any] | None = None,
    ) -> Posted:
        """Operator adjustment: positive credits, negative debits (never below the overage limit)."""
        if amount_cents == 0 or abs(amount_cents) > MAX_AMOUNT:
            raise ValidationFailed(
                f"amount_cents must be a non-zero integer between -{MAX_AMOUNT} and {MAX_AMOUNT}",
                field="amount_cents",
            )
        async with self.db.transaction(conn) as c:
            return await self.post(
                c,
                NewEntry(
                    org_id=org_id,
                    kind="adjustment",
                    amount_cents=amount_cents,
                    description=description,
                    metadata=metadata or {},
                ),
                require_funds=amount_cents < 0,
            )

    async def refund(
        self,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        conn: AsyncConnection | None = None,
        description: str,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Posted:
        """Money returned to the tenant outside Billfold: removes it from the free balance.

        A ``reference`` already booked for this organization is 409 ``duplicate_reference``."""
        positive_amount(amount_cents)
        async with self.db.transaction(conn) as c:
            if reference is not None:
                await self._reference_free(c, org_id, reference)
            try:
                return await self.post(
                    c,
                    NewEntry(
                        org_id=org_id,
                        kind="refund",
                        amount_cents=-amount_cents,
                        description=description,
                        metadata=metadata or {},
                        reference=reference,
                    ),
                    require_funds=True,
                )
            except IntegrityError:
                # Two refunds with one reference raced past the check: the unique index decided.
                raise Conflict(
                    f"reference {reference!r} is already booked for this organization",
                    code="duplicate_reference",
                    field="reference",
                ) from None

    async def _reference_free(self, conn: AsyncConnection, org_id: uuid.UUID, reference: str) -> None:
        taken = (
            await conn.execute(
                select(entries.c.id).where(entries.c.org_id == org_id, entries.c.reference == reference)
            )
        ).first()
        if taken is not None:
            raise Conflict(
                f"reference {reference!r} is already booked for this organization (entry {taken.id})",
                code="duplicate_reference",
                field="reference",
            )

    # -- reads --------------------------------------------------------------------------------------

    async def list_entries(
        self,
        org_id: uuid.UUID,
        *,
        limit: int,
        offset: int | None = None,
        cursor: int | None = None,
        kinds: list[str] | None = None,
        start: datetime.datetime | None = None,
        end: datetime.datetime | None = None,
        newest_first: bool = False,
        count: bool = False,
        conn: AsyncConnection | None = None,
    ) -> EntryPage:
        """One page of entries. Cursor pages are keyed on the entry id; ids of one organization
        follow commit order, so a walk never misses or repeats an entry while others are written."""
        conditions = [entries.c.org_id == org_id]
        if kinds:
            conditions.append(entries.c.kind.in_(kinds))
        if start is not None:
            conditions.append(entries.c.created_at >= start)
        if end is not None:
            conditions.append(entries.c.created_at <= end)
        filtered = and_(*conditions)
        stmt = select(*ENTRY_COLUMNS).where(filtered)
        if cursor is not None:
            stmt = stmt.where(entries.c.id < cursor if newest_first else entries.c.id > cursor)
        stmt = stmt.order_by(entries.c.id.desc() if newest_first else entries.c.id.asc()).limit(limit + 1)
        if offset:
            stmt = stmt.offset(offset)
        async with self.db.reading(conn) as c:
            rows = (await c.execute(stmt)).all()
            total = None
            if count:
                total = (
                    await c.execute(select(func.count()).select_from(entries).where(filtered))
                ).scalar_one()
        page = [entry_row(r) for r in rows[:limit]]
        next_cursor = str(page[-1].id) if len(rows) > limit and page else None
        return EntryPage(entries=page, total=total, next_cursor=next_cursor)
