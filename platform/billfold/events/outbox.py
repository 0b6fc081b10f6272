"""Write domain events in the caller's transaction; deliver them after commit from the worker."""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.db import table_of, utcnow
from billfold.events.models import OutboxEvent

if TYPE_CHECKING:
    from billfold.state import AppState

logger = logging.getLogger("billfold.events")
outbox = table_of(OutboxEvent)

Handler = Callable[["AppState", "Event"], Awaitable[None]]


class Event(msgspec.Struct, frozen=True):
    id: int
    type: str
    org_id: uuid.UUID | None
    payload: dict[str, Any]
    created_at: datetime.datetime
    attempts: int


async def emit(
    conn: AsyncConnection, type: str, payload: dict[str, Any], *, org_id: uuid.UUID | None = None
) -> None:
    """Record a domain event; it is delivered only if the surrounding transaction commits."""
    await conn.execute(outbox.insert().values(type=type, org_id=org_id, payload=payload))


LEASE_SECONDS = 60


async def claim_batch(conn: AsyncConnection, *, limit: int) -> list[Event]:
    """Lease up to ``limit`` due events for LEASE_SECONDS. On PostgreSQL rows are picked with
    SKIP LOCKED, so several workers share the queue without taking the same event; the lease is
    committed before handlers run, and an event whose worker died is taken again when it ends."""
    now = utcnow()
    stmt = (
        select(outbox)
        .where(outbox.c.processed_at.is_(None), outbox.c.available_at <= now)
        .order_by(outbox.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    rows = (await conn.execute(stmt)).all()
    if rows:
        await conn.execute(
            update(outbox)
            .where(outbox.c.id.in_([r.id for r in rows]))
            .values(available_at=now + datetime.timedelta(seconds=LEASE_SECONDS))
        )
    return [
        Event(
            id=r.id,
            type=r.type,
            org_id=r.org_id,
            payload=r.payload or {},
            created_at=r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=datetime.UTC),
            attempts=r.attempts,
        )
        for r in rows
    ]


async def mark_done(conn: AsyncConnection, event_id: int) -> None:
    await conn.execute(update(outbox).where(outbox.c.id == event_id).values(processed_at=utcnow()))


async def mark_failed(conn: AsyncConnection, event: Event, error: str, *, max_attempts: int) -> None:
    attempts = event.attempts + 1
    backoff = min(2**attempts, 300)
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_error": error[:2000],
        "available_at": utcnow() + datetime.timedelta(seconds=backoff),
    }
    if attempts >= max_attempts:
        values["processed_at"] = utcnow()  # parked: kept with its error for the operator
    await conn.execute(update(outbox).where(outbox.c.id == event.id).values(**values))
