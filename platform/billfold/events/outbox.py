"""Domain events: written with the change that caused them, delivered after commit by the worker.

``emit`` inserts the event into the outbox through the caller's connection and calls the
``billfold_domain_event`` hook in the same transaction; the worker later hands each committed
event to the handlers of ``billfold_event_handlers``, at least once.
"""

from __future__ import annotations

import datetime
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billfold.clock import now
from billfold.db import table_of, utcnow
from billfold.events.models import OutboxEvent

if TYPE_CHECKING:
    from billfold.plugins import Hooks

outbox = table_of(OutboxEvent)


class DomainEvent(msgspec.Struct, frozen=True):
    """A domain event: ``type`` ("payment.succeeded"...), its organization and payload.

    ``id`` is the outbox row's id: unique, and stable across redeliveries (receivers dedupe on it).
    ``created_at`` is business time (:func:`billfold.now`)."""

    id: int
    type: str
    org_id: uuid.UUID | None
    payload: dict[str, Any]
    created_at: datetime.datetime
    attempts: int = 0


Handler = Callable[[DomainEvent], Awaitable[None]]

_reactors: weakref.WeakKeyDictionary[Engine, Hooks] = weakref.WeakKeyDictionary()


def bind_reactions(engine: AsyncEngine, hooks: Hooks) -> None:
    """Make ``emit`` on this engine's connections call ``billfold_domain_event`` (composition root)."""
    _reactors[engine.sync_engine] = hooks


async def emit(
    conn: AsyncConnection, type: str, payload: dict[str, Any], *, org_id: uuid.UUID | None = None
) -> DomainEvent:
    """Record a domain event in the caller's transaction and let plugins react inside it.

    It is delivered to the worker's handlers only if the surrounding transaction commits."""
    created = now()
    event_id = (
        await conn.execute(
            outbox.insert()
            .values(type=type, org_id=org_id, payload=payload, created_at=created, available_at=utcnow())
            .returning(outbox.c.id)
        )
    ).scalar_one()
    event = DomainEvent(id=event_id, type=type, org_id=org_id, payload=payload, created_at=created)
    hooks = _reactors.get(conn.sync_engine)
    if hooks is not None:
        await hooks.call("billfold_domain_event", conn=conn, event=event)
    return event


LEASE_SECONDS = 60


async def claim_batch(conn: AsyncConnection, *, limit: int) -> list[DomainEvent]:
    """Lease up to ``limit`` due events for LEASE_SECONDS (real time). On PostgreSQL rows are
    picked with SKIP LOCKED, so several workers share the queue without taking the same event; the
    lease is committed before handlers run, and an event whose worker died is taken again when the
    lease ends."""
    current = utcnow()
    stmt = (
        select(outbox)
        .where(outbox.c.processed_at.is_(None), outbox.c.available_at <= current)
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
            .values(available_at=current + datetime.timedelta(seconds=LEASE_SECONDS))
        )
    return [
        DomainEvent(
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


def backoff_seconds(attempts: int) -> float:
    """The worker's default: 2, 4, 8 … seconds, at most 5 minutes."""
    return float(min(2**attempts, 300))


async def mark_failed(
    conn: AsyncConnection,
    event: DomainEvent,
    error: str,
    *,
    max_attempts: int,
    retry_in: float | None = None,
) -> None:
    """Count a failed delivery and schedule the next try (``retry_in`` seconds, or the backoff);
    after ``max_attempts`` the event is parked with its error for the operator."""
    attempts = event.attempts + 1
    delay = backoff_seconds(attempts) if retry_in is None else max(0.0, retry_in)
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_error": error[:2000],
        "available_at": utcnow() + datetime.timedelta(seconds=delay),
    }
    if attempts >= max_attempts:
        values["processed_at"] = utcnow()
    await conn.execute(update(outbox).where(outbox.c.id == event.id).values(**values))
