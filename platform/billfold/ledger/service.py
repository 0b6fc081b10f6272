"""The ledger service: the only code that changes balances.

Every balance change is one conditional UPDATE of the organization's account row plus one
INSERT of an immutable entry, in the caller's transaction (SQLAlchemy Core on the shared engine:
the ORM session costs several times the SQL on the debit hot path). The account row lock
serialises writers per organization, so entry ids of one organization follow commit order.
``charge_alone`` is the exception that owns its transaction: on PostgreSQL it is one
self-committing statement when nothing else has to happen inside it.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import msgspec
import pluggy
from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.db import driver_connection, new_id, table_of, utcnow
from billfold.errors import Conflict, NotFound, PaymentRequired, ValidationFailed
from billfold.ledger.models import Account, Entry, Hold
from billfold.plugins import call_all

accounts = table_of(Account)
entries = table_of(Entry)
holds = table_of(Hold)


class AccountRow(msgspec.Struct, frozen=True):
    org_id: uuid.UUID
    currency: str
    free_cents: int
    reserved_cents: int
    overage_limit_cents: int
    watermark_cents: int | None

    @property
    def total_cents(self) -> int:
        return self.free_cents + self.reserved_cents

    @property
    def below_watermark(self) -> bool:
        return self.watermark_cents is not None and self.free_cents < self.watermark_cents


class EntryRow(msgspec.Struct, frozen=True):
    id: int
    org_id: uuid.UUID
    kind: str
    amount_cents: int
    reserved_delta_cents: int
    free_after_cents: int
    reserved_after_cents: int
    description: str
    metadata: dict[str, Any]
    call_id: int | None
    phone_number_id: int | None
    phone_number_value: str | None
    hold_id: uuid.UUID | None
    reference: str | None
    created_at: datetime.datetime


class HoldRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    org_id: uuid.UUID
    amount_cents: int
    captured_cents: int | None
    status: str
    description: str
    metadata: dict[str, Any]
    expires_at: datetime.datetime
    created_at: datetime.datetime
    finalized_at: datetime.datetime | None


_ACCOUNT_COLUMNS = (
    accounts.c.org_id,
    accounts.c.currency,
    accounts.c.free_cents,
    accounts.c.reserved_cents,
    accounts.c.overage_limit_cents,
    accounts.c.watermark_cents,
)
_ENTRY_COLUMNS = (
    entries.c.id,
    entries.c.org_id,
    entries.c.kind,
    entries.c.amount_cents,
    entries.c.reserved_delta_cents,
    entries.c.free_after_cents,
    entries.c.reserved_after_cents,
    entries.c.description,
    entries.c.metadata,
    entries.c.call_id,
    entries.c.phone_number_id,
    entries.c.phone_number_value,
    entries.c.hold_id,
    entries.c.reference,
    entries.c.created_at,
)
_HOLD_COLUMNS = (
    holds.c.id,
    holds.c.org_id,
    holds.c.amount_cents,
    holds.c.captured_cents,
    holds.c.status,
    holds.c.description,
    holds.c.metadata,
    holds.c.expires_at,
    holds.c.created_at,
    holds.c.finalized_at,
)


def _as_utc(value: datetime.datetime) -> datetime.datetime:
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def _entry(row: Any) -> EntryRow:
    return EntryRow(
        id=row.id,
        org_id=row.org_id,
        kind=row.kind,
        amount_cents=row.amount_cents,
        reserved_delta_cents=row.reserved_delta_cents,
        free_after_cents=row.free_after_cents,
        reserved_after_cents=row.reserved_after_cents,
        description=row.description,
        metadata=row.metadata or {},
        call_id=row.call_id,
        phone_number_id=row.phone_number_id,
        phone_number_value=row.phone_number_value,
        hold_id=row.hold_id,
        reference=row.reference,
        created_at=_as_utc(row.created_at),
    )


def _hold(row: Any) -> HoldRow:
    return HoldRow(
        id=row.id,
        org_id=row.org_id,
        amount_cents=row.amount_cents,
        captured_cents=row.captured_cents,
        status=row.status,
        description=row.description,
        metadata=row.metadata or {},
        expires_at=_as_utc(row.expires_at),
        created_at=_as_utc(row.created_at),
        finalized_at=_as_utc(row.finalized_at) if row.finalized_at else None,
    )


_POST_POSTGRES = """
WITH account AS (
    UPDATE ledger_accounts
    SET free_cents = free_cents + $1::bigint,
        reserved_cents = reserved_cents + $2::bigint,
        entry_count = entry_count + 1,
        updated_at = $3::timestamptz
    WHERE org_id = $4::uuid
      AND (NOT $5::boolean OR free_cents + $1::bigint >= -overage_limit_cents)
      AND (NOT $6::boolean OR watermark_cents IS NULL OR free_cents + $1::bigint >= watermark_cents)
    RETURNING org_id, currency, free_cents, reserved_cents, overage_limit_cents, watermark_cents
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
       account.overage_limit_cents, account.watermark_cents, entry.id
FROM account, entry
"""
"""The PostgreSQL form of LedgerService._post (same semantics as the Core statements it replaces
there), in asyncpg's own parameter style so that it runs as it is both through SQLAlchemy
(``exec_driver_sql``, inside a transaction) and on the pooled driver connection
(``charge_alone``, self-committing); parameters in the order of ``_post_parameters``. With $6
(stay above the watermark) it also refuses a write that would leave the free balance below the
account's watermark: ``charge_alone`` needs to know that no in-transaction reaction was due."""


class _NewEntry(msgspec.Struct, frozen=True, kw_only=True):
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
    created_at: datetime.datetime = msgspec.field(default_factory=utcnow)

    def written(self, entry_id: int, account: AccountRow) -> EntryRow:
        return EntryRow(
            id=entry_id,
            free_after_cents=account.free_cents,
            reserved_after_cents=account.reserved_cents,
            **msgspec.structs.asdict(self),
        )


def _post_parameters(entry: _NewEntry, *, require_funds: bool, stay_above_watermark: bool) -> tuple[Any, ...]:
    return (
        entry.amount_cents - entry.reserved_delta_cents,
        entry.reserved_delta_cents,
        entry.created_at,
        entry.org_id,
        require_funds,
        stay_above_watermark,
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


def _posted_row(entry: _NewEntry, row: Any) -> tuple[AccountRow, int]:
    """The account and entry id from a row of _POST_POSTGRES (SQLAlchemy Row or asyncpg Record)."""
    account = AccountRow(
        org_id=entry.org_id,
        currency=row[1],
        free_cents=row[2],
        reserved_cents=row[3],
        overage_limit_cents=row[4],
        watermark_cents=row[5],
    )
    return account, row[6]


class Posted(msgspec.Struct, frozen=True):
    entry: EntryRow
    account: AccountRow


class EntryPage(msgspec.Struct, frozen=True):
    entries: list[EntryRow]
    total: int | None
    next_cursor: str | None


class LedgerService:
    """Balance changes and reads. Methods take the caller's connection; the caller commits."""

    def __init__(self, pm: pluggy.PluginManager, state: Any = None) -> None:
        self._hook = pm.hook
        self._state = state

    # -- accounts --------------------------------------------------------------------------

    async def open_account(self, conn: AsyncConnection, org_id: uuid.UUID, currency: str) -> AccountRow:
        await conn.execute(accounts.insert().values(org_id=org_id, currency=currency))
        return await self.account(conn, org_id)

    async def account(self, conn: AsyncConnection, org_id: uuid.UUID) -> AccountRow:
        row = (await conn.execute(select(*_ACCOUNT_COLUMNS).where(accounts.c.org_id == org_id))).first()
        if row is None:
            raise NotFound("no billing account for this organization", code="account_not_found")
        return AccountRow(*row)

    async def set_overage_limit(self, conn: AsyncConnection, org_id: uuid.UUID, limit_cents: int) -> None:
        if limit_cents < 0:
            raise ValidationFailed("overage limit must be >= 0", field="overage_limit_cents")
        await conn.execute(
            update(accounts).where(accounts.c.org_id == org_id).values(overage_limit_cents=limit_cents)
        )

    async def refresh_watermark(self, conn: AsyncConnection, org_id: uuid.UUID) -> int | None:
        """Ask every plugin which free-balance levels it watches and store the highest."""
        # Lock the account first: a concurrent refresh (a settings change, the CLI) must not write
        # an answer computed from settings older than ours.
        await conn.execute(select(accounts.c.org_id).where(accounts.c.org_id == org_id).with_for_update())
        levels = [
            level
            for answer in await call_all(self._hook.billfold_balance_watermarks(conn=conn, org_id=org_id))
            if answer is not None
            for level in (answer if isinstance(answer, list | tuple) else [answer])
        ]
        watermark = max(levels) if levels else None
        await conn.execute(
            update(accounts).where(accounts.c.org_id == org_id).values(watermark_cents=watermark)
        )
        return watermark

    # -- the one write path -----------------------------------------------------------------

    async def _post(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        *,
        kind: str,
        amount_cents: int,
        reserved_delta_cents: int = 0,
        require_funds: bool,
        description: str = "",
        metadata: dict[str, Any] | None = None,
        call_id: int | None = None,
        phone_number_id: int | None = None,
        phone_number_value: str | None = None,
        hold_id: uuid.UUID | None = None,
        reference: str | None = None,
    ) -> Posted:
        free_delta = amount_cents - reserved_delta_cents
        entry = _NewEntry(
            org_id=org_id,
            kind=kind,
            amount_cents=amount_cents,
            reserved_delta_cents=reserved_delta_cents,
            description=description,
            metadata=metadata or {},
            call_id=call_id,
            phone_number_id=phone_number_id,
            phone_number_value=phone_number_value,
            hold_id=hold_id,
            reference=reference,
        )
        write = self._write_postgres if conn.dialect.name == "postgresql" else self._write_core
        written = await write(conn, entry, require_funds=require_funds and free_delta < 0)
        if written is None:
            raise await self._refusal(conn, org_id, free_delta)
        account, entry_id = written
        posted = Posted(entry=entry.written(entry_id, account), account=account)
        await call_all(
            self._hook.billfold_ledger_entry_written(
                conn=conn, entry=posted.entry, account=account, state=self._state
            )
        )
        if free_delta < 0 and account.below_watermark:
            await call_all(
                self._hook.billfold_balance_below_watermark(
                    conn=conn, entry=posted.entry, account=account, state=self._state
                )
            )
        return posted

    async def _write_core(
        self, conn: AsyncConnection, entry: _NewEntry, *, require_funds: bool
    ) -> tuple[AccountRow, int] | None:
        """The portable write path (SQLite): the conditional UPDATE, then the entry INSERT."""
        free_delta = entry.amount_cents - entry.reserved_delta_cents
        stmt = (
            update(accounts)
            .where(accounts.c.org_id == entry.org_id)
            .values(
                free_cents=accounts.c.free_cents + free_delta,
                reserved_cents=accounts.c.reserved_cents + entry.reserved_delta_cents,
                entry_count=accounts.c.entry_count + 1,
                updated_at=entry.created_at,
            )
            .returning(*_ACCOUNT_COLUMNS)
        )
        if require_funds:
            stmt = stmt.where(accounts.c.free_cents + free_delta >= -accounts.c.overage_limit_cents)
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
        self, conn: AsyncConnection, entry: _NewEntry, *, require_funds: bool
    ) -> tuple[AccountRow, int] | None:
        """The PostgreSQL write path: the same UPDATE and INSERT as one constant statement
        (one round trip, no compilation)."""
        params = _post_parameters(entry, require_funds=require_funds, stay_above_watermark=False)
        row = (await conn.exec_driver_sql(_POST_POSTGRES, params)).first()
        return None if row is None else _posted_row(entry, row)

    async def _refusal(self, conn: AsyncConnection, org_id: uuid.UUID, free_delta: int) -> PaymentRequired:
        current = await self.account(conn, org_id)  # raises 404 when there is no account
        return PaymentRequired(
            f"insufficient funds: {-free_delta} needed, {current.free_cents} available",
            code="insufficient_funds",
            fix="Top up the balance or enable auto-reload, then retry.",
            extra={"balance_cents": current.free_cents, "required_cents": -free_delta},
        )

    async def _authorize(
        self, conn: AsyncConnection, org_id: uuid.UUID, amount_cents: int, kind: str, context: dict[str, Any]
    ) -> None:
        await call_all(
            self._hook.billfold_authorize_debit(
                conn=conn,
                org_id=org_id,
                amount_cents=amount_cents,
                kind=kind,
                context=context,
                state=self._state,
            )
        )

    # -- money in and out -------------------------------------------------------------------

    async def charge(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        description: str = "",
        metadata: dict[str, Any] | None = None,
        call_id: int | None = None,
        phone_number_id: int | None = None,
        phone_number_value: str | None = None,
        reference: str | None = None,
    ) -> Posted:
        """Debit the free balance, or raise PaymentRequired (402) when it is short."""
        _positive(amount_cents)
        await self._authorize(
            conn, org_id, amount_cents, "debit", {"description": description, "metadata": metadata}
        )
        return await self._post(
            conn,
            org_id,
            kind="debit",
            amount_cents=-amount_cents,
            require_funds=True,
            description=description,
            metadata=metadata,
            call_id=call_id,
            phone_number_id=phone_number_id,
            phone_number_value=phone_number_value,
            reference=reference,
        )

    async def charge_alone(
        self,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        description: str = "",
        metadata: dict[str, Any] | None = None,
        call_id: int | None = None,
        phone_number_id: int | None = None,
        phone_number_value: str | None = None,
    ) -> Posted:
        """A charge that is its own transaction (no Idempotency-Key, nothing else to write with it).

        On PostgreSQL, when no plugin has to run inside debits (``billfold_authorize_debit``,
        ``billfold_ledger_entry_written``), the conditional UPDATE and the entry INSERT run as one
        self-committing statement: the account row is locked only while PostgreSQL executes it,
        not across round trips to this process. That statement refuses a debit that would leave
        the balance below the account's watermark; such a debit, and one refused for funds, is
        then redone as a full transaction (``charge``), which calls the below-watermark hooks or
        raises the 402."""
        _positive(amount_cents)
        engine = self._state.engine
        if engine.dialect.name == "postgresql" and not self.debits_need_transaction():
            entry = _NewEntry(
                org_id=org_id,
                kind="debit",
                amount_cents=-amount_cents,
                description=description,
                metadata=metadata or {},
                call_id=call_id,
                phone_number_id=phone_number_id,
                phone_number_value=phone_number_value,
            )
            params = _post_parameters(entry, require_funds=True, stay_above_watermark=True)
            async with driver_connection(engine) as driver:
                row = await driver.fetchrow(_POST_POSTGRES, *params)
            if row is not None:
                account, entry_id = _posted_row(entry, row)
                return Posted(entry=entry.written(entry_id, account), account=account)
        async with engine.begin() as conn:
            return await self.charge(
                conn,
                org_id,
                amount_cents,
                description=description,
                metadata=metadata,
                call_id=call_id,
                phone_number_id=phone_number_id,
                phone_number_value=phone_number_value,
            )

    def debits_need_transaction(self) -> bool:
        """True while a plugin implements a hook that must run inside every debit's transaction."""
        return bool(
            self._hook.billfold_authorize_debit.get_hookimpls()
            or self._hook.billfold_ledger_entry_written.get_hookimpls()
        )

    async def credit(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        description: str = "",
        metadata: dict[str, Any] | None = None,
        reference: str | None = None,
    ) -> Posted:
        """Add money (a payment). ``reference`` makes the credit unique per organization."""
        _positive(amount_cents)
        return await self._post(
            conn,
            org_id,
            kind="credit",
            amount_cents=amount_cents,
            require_funds=False,
            description=description,
            metadata=metadata,
            reference=reference,
        )

    async def adjust(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        description: str,
        metadata: dict[str, Any] | None = None,
    ) -> Posted:
        """Operator adjustment: positive credits, negative debits (never below the overage limit)."""
        if amount_cents == 0:
            raise ValidationFailed("amount_cents must not be 0", field="amount_cents")
        return await self._post(
            conn,
            org_id,
            kind="adjustment",
            amount_cents=amount_cents,
            require_funds=amount_cents < 0,
            description=description,
            metadata=metadata,
        )

    async def refund(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        description: str,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Posted:
        """Money returned to the tenant outside Billfold: removes it from the free balance."""
        _positive(amount_cents)
        return await self._post(
            conn,
            org_id,
            kind="refund",
            amount_cents=-amount_cents,
            require_funds=True,
            description=description,
            metadata=metadata,
            reference=reference,
        )

    # -- holds ------------------------------------------------------------------------------

    async def hold(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        expires_in_seconds: int,
        description: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> tuple[HoldRow, Posted]:
        """Reserve money for an in-flight operation: free → reserved until capture, release or expiry."""
        _positive(amount_cents)
        await self._authorize(
            conn, org_id, amount_cents, "hold", {"description": description, "metadata": metadata}
        )
        hold_id = new_id()
        now = utcnow()
        posted = await self._post(
            conn,
            org_id,
            kind="hold",
            amount_cents=0,
            reserved_delta_cents=amount_cents,
            require_funds=True,
            description=description or "Hold",
            metadata=metadata,
            hold_id=hold_id,
        )
        await conn.execute(
            holds.insert().values(
                id=hold_id,
                org_id=org_id,
                amount_cents=amount_cents,
                status="pending",
                description=description,
                metadata=metadata or {},
                expires_at=now + datetime.timedelta(seconds=expires_in_seconds),
                created_at=now,
            )
        )
        return await self.get_hold(conn, org_id, hold_id), posted

    async def get_hold(self, conn: AsyncConnection, org_id: uuid.UUID, hold_id: uuid.UUID) -> HoldRow:
        row = (
            await conn.execute(select(*_HOLD_COLUMNS).where(holds.c.id == hold_id, holds.c.org_id == org_id))
        ).first()
        if row is None:
            raise NotFound("hold not found", code="hold_not_found", field="hold_id")
        return _hold(row)

    async def _finalize(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        hold_id: uuid.UUID,
        status: str,
        *,
        captured_cents: int | None = None,
        now: datetime.datetime,
        allow_expired: bool = False,
    ) -> HoldRow | None:
        """Move a pending hold to its final status, once; None if it was not pending (anymore)."""
        conditions = [holds.c.id == hold_id, holds.c.org_id == org_id, holds.c.status == "pending"]
        if not allow_expired:
            conditions.append(holds.c.expires_at > now)
        values: dict[str, Any] = {"status": status, "finalized_at": now}
        if captured_cents is not None:
            conditions.append(holds.c.amount_cents >= captured_cents)
            values["captured_cents"] = captured_cents
        elif status == "captured":
            values["captured_cents"] = holds.c.amount_cents
        row = (
            await conn.execute(
                update(holds).where(and_(*conditions)).values(**values).returning(*_HOLD_COLUMNS)
            )
        ).first()
        return _hold(row) if row else None

    async def _explain_not_pending(
        self, conn: AsyncConnection, org_id: uuid.UUID, hold_id: uuid.UUID, captured_cents: int | None
    ) -> Exception:
        hold = await self.get_hold(conn, org_id, hold_id)
        if hold.status != "pending":
            return Conflict(
                f"hold is already {hold.status}",
                code=f"hold_{hold.status}",
                extra={"hold_status": hold.status},
            )
        if captured_cents is not None and captured_cents > hold.amount_cents:
            return ValidationFailed(
                f"cannot capture {captured_cents}: the hold is for {hold.amount_cents}",
                code="capture_exceeds_hold",
                field="amount_cents",
            )
        return Conflict("hold has expired", code="hold_expired", extra={"hold_status": "expired"})

    async def capture(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        hold_id: uuid.UUID,
        amount_cents: int | None = None,
        *,
        description: str | None = None,
    ) -> tuple[HoldRow, Posted]:
        """Spend a hold, fully or partly; the rest returns to the free balance. Once only."""
        if amount_cents is not None and amount_cents < 0:
            raise ValidationFailed("amount_cents must be >= 0", field="amount_cents")
        now = utcnow()
        hold = await self._finalize(conn, org_id, hold_id, "captured", captured_cents=amount_cents, now=now)
        if hold is None:
            raise await self._explain_not_pending(conn, org_id, hold_id, amount_cents)
        captured = hold.captured_cents or 0
        rest = hold.amount_cents - captured
        posted = await self._post(
            conn,
            org_id,
            kind="capture",
            amount_cents=-captured,
            reserved_delta_cents=-captured,
            require_funds=False,
            description=description or hold.description or "Hold captured",
            metadata=hold.metadata,
            hold_id=hold.id,
        )
        if rest:
            released = await self._post(
                conn,
                org_id,
                kind="release",
                amount_cents=0,
                reserved_delta_cents=-rest,
                require_funds=False,
                description="Hold remainder released",
                hold_id=hold.id,
            )
            # Answer with the capture entry, and the balance after the remainder came back.
            posted = Posted(entry=posted.entry, account=released.account)
        return hold, posted

    async def release(
        self, conn: AsyncConnection, org_id: uuid.UUID, hold_id: uuid.UUID
    ) -> tuple[HoldRow, Posted]:
        """Return a hold's money to the free balance. Once only."""
        now = utcnow()
        hold = await self._finalize(conn, org_id, hold_id, "released", now=now, allow_expired=False)
        if hold is None:
            raise await self._explain_not_pending(conn, org_id, hold_id, None)
        posted = await self._release_entry(conn, hold, "Hold released")
        return hold, posted

    async def _release_entry(self, conn: AsyncConnection, hold: HoldRow, description: str) -> Posted:
        return await self._post(
            conn,
            hold.org_id,
            kind="release",
            amount_cents=0,
            reserved_delta_cents=-hold.amount_cents,
            require_funds=False,
            description=description,
            hold_id=hold.id,
        )

    async def expire_due_holds(self, conn: AsyncConnection, *, limit: int = 100) -> int:
        """Release pending holds whose time is up. Returns how many expired."""
        now = utcnow()
        due = (
            await conn.execute(
                select(holds.c.id, holds.c.org_id)
                .where(holds.c.status == "pending", holds.c.expires_at <= now)
                .order_by(holds.c.expires_at)
                .limit(limit)
            )
        ).all()
        expired = 0
        for hold_id, org_id in due:
            hold = await self._finalize(conn, org_id, hold_id, "expired", now=now, allow_expired=True)
            if hold is not None:
                await self._release_entry(conn, hold, "Hold expired")
                expired += 1
        return expired

    # -- reads ------------------------------------------------------------------------------

    async def list_entries(
        self,
        conn: AsyncConnection,
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
        stmt = select(*_ENTRY_COLUMNS).where(filtered)
        if cursor is not None:
            stmt = stmt.where(entries.c.id < cursor if newest_first else entries.c.id > cursor)
        stmt = stmt.order_by(entries.c.id.desc() if newest_first else entries.c.id.asc()).limit(limit + 1)
        if offset:
            stmt = stmt.offset(offset)
        rows = (await conn.execute(stmt)).all()
        page = [_entry(r) for r in rows[:limit]]
        next_cursor = str(page[-1].id) if len(rows) > limit and page else None
        total = None
        if count:
            total = (
                await conn.execute(select(func.count()).select_from(entries).where(filtered))
            ).scalar_one()
        return EntryPage(entries=page, total=total, next_cursor=next_cursor)


def _positive(amount_cents: int) -> None:
    if amount_cents <= 0:
        raise ValidationFailed("amount_cents must be a positive integer", field="amount_cents")
