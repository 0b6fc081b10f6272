"""Payments: the record of every provider payment, and the one place money comes in.

``credit`` credits a provider payment exactly once however often and in whatever order the
request and the webhooks report it: the payment row is claimed with a conditional UPDATE
(``credited_entry_id IS NULL``), and the ledger entry carries a unique reference as a second
guard. Outcomes are domain events (``payment.succeeded``, ``payment.failed``,
``payment.requires_action``) that other parts react to inside the same transaction (auto-reload).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.clock import now
from billfold.db import Database, dialect_insert, new_id, table_of
from billfold.events.outbox import emit
from billfold.ledger.service import LedgerService
from billfold.payments.models import Payment
from billfold.payments.provider import Intent

logger = logging.getLogger("billfold.payments")

payments = table_of(Payment)

PURPOSES = ("top_up", "auto_reload", "checkout")
PENDING_STATUSES = ("requires_action", "requires_payment_method", "requires_confirmation", "processing")
_DESCRIPTIONS = {"top_up": "Top-up", "auto_reload": "Auto-reload", "checkout": "Checkout payment"}


class PaymentRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    org_id: uuid.UUID
    provider: str
    provider_payment_id: str
    amount_cents: int
    currency: str
    status: str
    purpose: str
    client_secret: str | None
    payment_method_id: str | None
    failure_code: str | None
    failure_message: str | None
    credited_entry_id: int | None


class CreditOutcome(msgspec.Struct, frozen=True):
    credited: bool
    org_id: uuid.UUID | None
    entry_id: int | None


class PaymentRepository(SQLAlchemyAsyncRepository[Payment]):
    model_type = Payment


def _payment(row: Any) -> PaymentRow:
    return PaymentRow(
        id=row.id,
        org_id=row.org_id,
        provider=row.provider,
        provider_payment_id=row.provider_payment_id,
        amount_cents=row.amount_cents,
        currency=row.currency,
        status=row.status,
        purpose=row.purpose,
        client_secret=row.client_secret,
        payment_method_id=row.payment_method_id,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
        credited_entry_id=row.credited_entry_id,
    )


def _insert(
    conn: AsyncConnection,
    org_id: uuid.UUID,
    provider: str,
    intent: Intent,
    purpose: str,
    values: dict[str, Any],
) -> Any:
    """The INSERT of a payment row for ``intent`` (the caller adds what happens on conflict)."""
    stamp = now()
    return dialect_insert(conn)(payments).values(
        id=new_id(),
        org_id=org_id,
        provider=provider,
        provider_payment_id=intent.id,
        amount_cents=intent.amount_cents,
        currency=intent.currency,
        purpose=purpose,
        client_secret=intent.client_secret,
        payment_method_id=intent.payment_method_id,
        created_at=stamp,
        **{"updated_at": stamp, **values},
    )


class CreditService:
    """Records provider payments and credits the succeeded ones exactly once."""

    def __init__(self, db: Database, ledger: LedgerService) -> None:
        self.db = db
        self.ledger = ledger

    async def record(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        provider: str,
        intent: Intent,
        *,
        purpose: str,
        announce: bool = True,
    ) -> None:
        """Insert the payment row for a provider intent, or refresh its status (never the credit;
        a late, stale report never moves a payment back from succeeded)."""
        values = {
            "status": intent.status,
            "failure_code": intent.failure_code,
            "failure_message": intent.failure_message,
            "updated_at": now(),
        }
        await conn.execute(
            _insert(conn, org_id, provider, intent, purpose, values).on_conflict_do_update(
                index_elements=[payments.c.provider, payments.c.provider_payment_id],
                set_=values,
                where=payments.c.status != "succeeded",
            )
        )
        if intent.status == "requires_action" and announce:
            await emit(
                conn,
                "payment.requires_action",
                {
                    "payment_intent_id": intent.id,
                    "amount_cents": intent.amount_cents,
                    "currency": intent.currency,
                    "purpose": purpose,
                    "client_secret": intent.client_secret,
                },
                org_id=org_id,
            )

    async def credit(
        self,
        conn: AsyncConnection,
        provider: str,
        intent: Intent,
        *,
        purpose: str,
        org_id: uuid.UUID,
    ) -> CreditOutcome:
        """Credit a succeeded provider payment exactly once (idempotent under any report order)."""
        purpose = intent.metadata.get("purpose", purpose)
        stamp = now()
        returning = (
            payments.c.id,
            payments.c.org_id,
            payments.c.amount_cents,
            payments.c.currency,
            payments.c.purpose,
        )
        # A payment seen for the first time is inserted already claimed (one write); a known one is
        # claimed by the conditional UPDATE. Either way only one report gets the row.
        claimed = (
            await conn.execute(
                _insert(
                    conn, org_id, provider, intent, purpose, {"status": "succeeded", "credited_entry_id": 0}
                )
                .on_conflict_do_nothing(index_elements=[payments.c.provider, payments.c.provider_payment_id])
                .returning(*returning)
            )
        ).first()
        if claimed is None:
            claimed = (
                await conn.execute(
                    update(payments)
                    .where(
                        payments.c.provider == provider,
                        payments.c.provider_payment_id == intent.id,
                        payments.c.credited_entry_id.is_(None),
                    )
                    .values(status="succeeded", credited_entry_id=0, failure_code=None, updated_at=stamp)
                    .returning(*returning)
                )
            ).first()
        if claimed is None:
            return CreditOutcome(credited=False, org_id=org_id, entry_id=None)
        account = await self.ledger.account(claimed.org_id, conn=conn)
        if claimed.currency != account.currency:
            logger.error(
                "payment %s is in %s, account in %s: not credited",
                intent.id,
                claimed.currency,
                account.currency,
            )
            await conn.execute(
                update(payments)
                .where(payments.c.id == claimed.id)
                .values(
                    credited_entry_id=None, status="requires_payment_method", failure_code="currency_mismatch"
                )
            )
            return CreditOutcome(credited=False, org_id=claimed.org_id, entry_id=None)
        posted = await self.ledger.credit(
            claimed.org_id,
            claimed.amount_cents,
            conn=conn,
            description=_DESCRIPTIONS.get(claimed.purpose, "Payment"),
            metadata={"payment_intent_id": intent.id, "provider": provider, "purpose": claimed.purpose},
            reference=f"payment:{provider}:{intent.id}",
        )
        await conn.execute(
            update(payments).where(payments.c.id == claimed.id).values(credited_entry_id=posted.entry.id)
        )
        await emit(
            conn,
            "payment.succeeded",
            {
                "payment_id": str(claimed.id),
                "payment_intent_id": intent.id,
                "amount_cents": claimed.amount_cents,
                "currency": claimed.currency,
                "purpose": claimed.purpose,
                "entry_id": posted.entry.id,
            },
            org_id=claimed.org_id,
        )
        return CreditOutcome(credited=True, org_id=claimed.org_id, entry_id=posted.entry.id)

    async def failed(
        self, conn: AsyncConnection, org_id: uuid.UUID, provider: str, intent: Intent, *, purpose: str
    ) -> None:
        """Record a failed payment and say so (``payment.failed``)."""
        failed = msgspec.structs.replace(intent, failure_code=intent.failure_code or "payment_failed")
        await self.record(conn, org_id, provider, failed, purpose=purpose)
        await emit(
            conn,
            "payment.failed",
            {
                "payment_intent_id": intent.id,
                "amount_cents": intent.amount_cents,
                "currency": intent.currency,
                "purpose": purpose,
                "failure_code": failed.failure_code,
                "failure_message": failed.failure_message,
                "status": failed.status,
                "client_secret": failed.client_secret,
            },
            org_id=org_id,
        )

    async def latest_pending(
        self, org_id: uuid.UUID, provider: str, *, payment_id: str | None, conn: AsyncConnection
    ) -> PaymentRow | None:
        """The organization's newest payment still waiting (3-D Secure, hosted checkout)."""
        stmt = select(payments).where(
            payments.c.org_id == org_id,
            payments.c.provider == provider,
            payments.c.credited_entry_id.is_(None),
            payments.c.status.in_(PENDING_STATUSES),
        )
        if payment_id:
            stmt = stmt.where(payments.c.provider_payment_id == payment_id)
        row = (await conn.execute(stmt.order_by(payments.c.created_at.desc()).limit(1))).first()
        return None if row is None else _payment(row)

    async def spent_since(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        purpose: str,
        since: Any,
        *,
        statuses: Sequence[str] = ("succeeded", "processing"),
    ) -> tuple[int, int]:
        """(sum, count) of an organization's payments of ``purpose`` created since ``since``."""
        total, count = (
            await conn.execute(
                select(func.coalesce(func.sum(payments.c.amount_cents), 0), func.count()).where(
                    payments.c.org_id == org_id,
                    payments.c.purpose == purpose,
                    payments.c.status.in_(statuses),
                    payments.c.created_at >= since,
                )
            )
        ).one()
        return int(total), int(count)

    async def list(
        self, org_id: uuid.UUID, *, limit: int = 50, offset: int = 0, conn: AsyncConnection | None = None
    ) -> tuple[list[PaymentRow], int]:
        async with self.db.reading(conn) as c, self.db.session(c) as session:
            rows, total = await PaymentRepository(session=session).get_many_and_count(
                LimitOffset(limit=limit, offset=offset), OrderBy("created_at", "desc"), org_id=org_id
            )
            return [_payment(r) for r in rows], total
