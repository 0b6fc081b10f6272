"""Holds: money reserved for an in-flight operation, then captured (fully or partly), released or
expired — each exactly once. A pending transfer in TigerBeetle's terms."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.clock import now
from billfold.db import Database, new_id, utcnow
from billfold.errors import Conflict, NotFound, ValidationFailed
from billfold.ledger.rows import HOLD_COLUMNS, HoldRow, Posted, hold_row, holds
from billfold.ledger.service import MAX_AMOUNT, LedgerService, NewEntry, positive_amount


class HoldService:
    """Reserve, capture, release and expire holds through the ledger's one write path.

    ``expires_at`` is real time (a timer, not a business event); ``created_at`` and
    ``finalized_at`` are business time."""

    def __init__(self, db: Database, ledger: LedgerService) -> None:
        self.db = db
        self.ledger = ledger

    async def hold(
        self,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        expires_in_seconds: int,
        conn: AsyncConnection | None = None,
        description: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> tuple[HoldRow, Posted]:
        """Reserve money: free → reserved until capture, release or expiry (402 when short)."""
        positive_amount(amount_cents)
        hold_id = new_id()
        async with self.db.transaction(conn) as c:
            await self.ledger.authorize(
                c, org_id, amount_cents, "hold", {"description": description, "metadata": metadata}
            )
            posted = await self.ledger.post(
                c,
                NewEntry(
                    org_id=org_id,
                    kind="hold",
                    amount_cents=0,
                    reserved_delta_cents=amount_cents,
                    description=description or "Hold",
                    metadata=metadata or {},
                    hold_id=hold_id,
                ),
                require_funds=True,
            )
            await c.execute(
                holds.insert().values(
                    id=hold_id,
                    org_id=org_id,
                    amount_cents=amount_cents,
                    status="pending",
                    description=description,
                    metadata=metadata or {},
                    expires_at=utcnow() + datetime.timedelta(seconds=expires_in_seconds),
                    created_at=now(),
                )
            )
            return await self.get(org_id, hold_id, conn=c), posted

    async def get(
        self, org_id: uuid.UUID, hold_id: uuid.UUID, *, conn: AsyncConnection | None = None
    ) -> HoldRow:
        """A hold of this organization (another organization's hold is 404)."""
        async with self.db.reading(conn) as c:
            row = (
                await c.execute(select(*HOLD_COLUMNS).where(holds.c.id == hold_id, holds.c.org_id == org_id))
            ).first()
        if row is None:
            raise NotFound("hold not found", code="hold_not_found", field="hold_id")
        return hold_row(row)

    async def _finalize(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        hold_id: uuid.UUID,
        status: str,
        *,
        captured_cents: int | None = None,
        allow_expired: bool = False,
    ) -> HoldRow | None:
        """Move a pending hold to its final status, once; None if it was not pending (anymore)."""
        conditions = [holds.c.id == hold_id, holds.c.org_id == org_id, holds.c.status == "pending"]
        if not allow_expired:
            conditions.append(holds.c.expires_at > utcnow())
        values: dict[str, Any] = {"status": status, "finalized_at": now()}
        if captured_cents is not None:
            conditions.append(holds.c.amount_cents >= captured_cents)
            values["captured_cents"] = captured_cents
        elif status == "captured":
            values["captured_cents"] = holds.c.amount_cents
        row = (
            await conn.execute(
                update(holds).where(and_(*conditions)).values(**values).returning(*HOLD_COLUMNS)
            )
        ).first()
        return hold_row(row) if row else None

    async def _explain_not_pending(
        self, conn: AsyncConnection, org_id: uuid.UUID, hold_id: uuid.UUID, captured_cents: int | None
    ) -> Exception:
        hold = await self.get(org_id, hold_id, conn=conn)
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
        org_id: uuid.UUID,
        hold_id: uuid.UUID,
        amount_cents: int | None = None,
        *,
        conn: AsyncConnection | None = None,
        description: str | None = None,
    ) -> tuple[HoldRow, Posted]:
        """Spend a hold, fully or partly; the rest returns to the free balance. Once only."""
        if amount_cents is not None and not 0 <= amount_cents <= MAX_AMOUNT:
            raise ValidationFailed(f"amount_cents must be between 0 and {MAX_AMOUNT}", field="amount_cents")
        async with self.db.transaction(conn) as c:
            hold = await self._finalize(c, org_id, hold_id, "captured", captured_cents=amount_cents)
            if hold is None:
                raise await self._explain_not_pending(c, org_id, hold_id, amount_cents)
            captured = hold.captured_cents or 0
            rest = hold.amount_cents - captured
            posted = await self.ledger.post(
                c,
                NewEntry(
                    org_id=org_id,
                    kind="capture",
                    amount_cents=-captured,
                    reserved_delta_cents=-captured,
                    description=description or hold.description or "Hold captured",
                    metadata=hold.metadata,
                    hold_id=hold.id,
                ),
                require_funds=False,
            )
            if rest:
                released = await self._release_entry(c, hold, "Hold remainder released", amount=rest)
                # Answer with the capture entry, and the balance after the remainder came back.
                posted = Posted(entry=posted.entry, account=released.account)
            return hold, posted

    async def release(
        self, org_id: uuid.UUID, hold_id: uuid.UUID, *, conn: AsyncConnection | None = None
    ) -> tuple[HoldRow, Posted]:
        """Return a hold's money to the free balance. Once only."""
        async with self.db.transaction(conn) as c:
            hold = await self._finalize(c, org_id, hold_id, "released")
            if hold is None:
                raise await self._explain_not_pending(c, org_id, hold_id, None)
            return hold, await self._release_entry(c, hold, "Hold released", amount=hold.amount_cents)

    async def _release_entry(
        self, conn: AsyncConnection, hold: HoldRow, description: str, *, amount: int
    ) -> Posted:
        return await self.ledger.post(
            conn,
            NewEntry(
                org_id=hold.org_id,
                kind="release",
                amount_cents=0,
                reserved_delta_cents=-amount,
                description=description,
                hold_id=hold.id,
            ),
            require_funds=False,
        )

    async def expire_due(self, *, limit: int = 1) -> int:
        """Release pending holds whose time is up, in one transaction. Returns how many expired.

        The worker calls it with limit=1: each hold takes its row then its account's, the order a
        capture or release takes them, so the sweep cannot deadlock with a tenant's request."""
        async with self.db.transaction() as conn:
            due = (
                await conn.execute(
                    select(holds.c.id, holds.c.org_id)
                    .where(holds.c.status == "pending", holds.c.expires_at <= utcnow())
                    .order_by(holds.c.expires_at)
                    .limit(limit)
                )
            ).all()
            expired = 0
            for hold_id, org_id in due:
                hold = await self._finalize(conn, org_id, hold_id, "expired", allow_expired=True)
                if hold is not None:
                    await self._release_entry(conn, hold, "Hold expired", amount=hold.amount_cents)
                    expired += 1
            return expired
