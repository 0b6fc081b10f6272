"""The audit writer, the audit reader, and named operator keys.

Every operator action writes exactly one row with :func:`record_audit` on the connection of the
transaction that makes the change: the row commits with the change or not at all. Rows are never
updated or deleted (migration 0007 puts triggers on the table that refuse it).
"""

from __future__ import annotations

import contextlib
import datetime
import secrets
import uuid
from typing import Any

import msgspec
from sqlalchemy import bindparam, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.audit.models import AuditEvent, OperatorKey
from billfold.db import Database, new_id, table_of, utcnow
from billfold.errors import Conflict, NotFound, ValidationFailed
from billfold.orgs.keys import KeyCache, hash_key

audit_events = table_of(AuditEvent)
operator_keys = table_of(OperatorKey)

BOOTSTRAP = "bootstrap"
"""The actor of requests made with ``BILLFOLD_ADMIN_API_KEY``."""
OPERATOR_KEY_PREFIX = "bfop_"
MAX_LABEL_LENGTH = 100
MAX_REASON_LENGTH = 500
MAX_ACTOR_LENGTH = 200

_LIVE_OPERATOR_KEY = select(operator_keys.c.label).where(
    operator_keys.c.key_hash == bindparam("key_hash"), operator_keys.c.revoked_at.is_(None)
)
_ANY_LIVE_OPERATOR_KEY = select(exists().where(operator_keys.c.revoked_at.is_(None)))


class AuditActor(msgspec.Struct, frozen=True):
    """Who takes an operator action (an operator key's label, ``bootstrap``, ``cli:<user>``,
    ``dashboard:<label>``...) and the tracking id of the request that carried it (None outside
    HTTP)."""

    who: str
    tracking_id: str | None = None


def _json(value: Any) -> Any:
    """A snapshot as JSON builtins (ids, dates and decimals as strings)."""
    if value is None:
        return None
    return msgspec.to_builtins(value)


def clean_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    if "\x00" in reason:
        raise ValidationFailed("reason must not contain NUL characters", field="reason")
    if len(reason) > MAX_REASON_LENGTH:
        raise ValidationFailed(f"reason must be at most {MAX_REASON_LENGTH} characters", field="reason")
    return reason.strip() or None


async def record_audit(
    conn: AsyncConnection,
    actor: AuditActor,
    action: str,
    *,
    org_id: uuid.UUID | None = None,
    target: str | None = None,
    before: Any = None,
    after: Any = None,
    reason: str | None = None,
) -> int:
    """Write one audit row in the transaction of ``conn`` (the one that makes the change) and
    return its id. ``before`` and ``after`` are what the action changed, as JSON-able values
    (structs, dicts, ids and dates are converted). ``action`` is ``<thing>.<verb>``, e.g.
    ``ledger.adjusted``, ``tier.pinned``, ``invoice.voided``."""
    if not actor.who or len(actor.who) > MAX_ACTOR_LENGTH:
        raise ValueError(f"an audit actor is 1 to {MAX_ACTOR_LENGTH} characters")
    row = (
        await conn.execute(
            insert(audit_events)
            .values(
                created_at=utcnow(),
                actor=actor.who,
                action=action,
                org_id=org_id,
                target=target,
                before=_json(before),
                after=_json(after),
                reason=clean_reason(reason),
                tracking_id=actor.tracking_id,
            )
            .returning(audit_events.c.id)
        )
    ).scalar_one()
    return int(row)


class AuditRow(msgspec.Struct, frozen=True):
    id: int
    created_at: datetime.datetime
    actor: str
    action: str
    org_id: uuid.UUID | None
    target: str | None
    before: Any
    after: Any
    reason: str | None
    tracking_id: str | None


class AuditPage(msgspec.Struct, frozen=True):
    items: list[AuditRow]
    next_cursor: str | None


def _as_utc(value: datetime.datetime) -> datetime.datetime:
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


class AuditService:
    """Reads the audit trail, newest first, a page at a time."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(
        self,
        *,
        org_id: uuid.UUID | None = None,
        action: str | None = None,
        actor: str | None = None,
        since: datetime.datetime | None = None,
        until: datetime.datetime | None = None,
        cursor: int | None = None,
        limit: int = 50,
        conn: AsyncConnection | None = None,
    ) -> AuditPage:
        """Rows matching every filter given (``since`` inclusive, ``until`` exclusive), below
        ``cursor`` (the ``next_cursor`` of the previous page)."""
        stmt = select(audit_events)
        if org_id is not None:
            stmt = stmt.where(audit_events.c.org_id == org_id)
        if action:
            stmt = stmt.where(audit_events.c.action == action)
        if actor:
            stmt = stmt.where(audit_events.c.actor == actor)
        if since is not None:
            stmt = stmt.where(audit_events.c.created_at >= since)
        if until is not None:
            stmt = stmt.where(audit_events.c.created_at < until)
        if cursor is not None:
            stmt = stmt.where(audit_events.c.id < cursor)
        stmt = stmt.order_by(audit_events.c.id.desc()).limit(limit + 1)
        async with self.db.reading(conn) as c:
            rows = (await c.execute(stmt)).all()
        items = [
            AuditRow(
                id=r.id,
                created_at=_as_utc(r.created_at),
                actor=r.actor,
                action=r.action,
                org_id=r.org_id,
                target=r.target,
                before=r.before,
                after=r.after,
                reason=r.reason,
                tracking_id=r.tracking_id,
            )
            for r in rows[:limit]
        ]
        more = len(rows) > limit and items
        return AuditPage(items=items, next_cursor=str(items[-1].id) if more else None)

    async def count(self, *, conn: AsyncConnection | None = None) -> int:
        async with self.db.reading(conn) as c:
            return int((await c.execute(select(func.count()).select_from(audit_events))).scalar_one())


# -- named operator keys ------------------------------------------------------------------------------


class IssuedOperatorKey(msgspec.Struct, frozen=True):
    id: uuid.UUID
    label: str
    prefix: str
    api_key: str
    """The key itself: shown once, never stored."""


class OperatorKeyRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    label: str
    prefix: str
    created_at: datetime.datetime
    created_by: str
    revoked_at: datetime.datetime | None


def check_label(label: str) -> str:
    label = label.strip()
    if not label or len(label) > MAX_LABEL_LENGTH:
        raise ValidationFailed(f"label must be 1 to {MAX_LABEL_LENGTH} characters", field="label")
    if not label.isprintable():
        raise ValidationFailed("label must be printable text", field="label")
    if label == BOOTSTRAP or ":" in label:
        # ``bootstrap`` names BILLFOLD_ADMIN_API_KEY; ``cli:``, ``dashboard:`` name the interfaces.
        raise ValidationFailed(f"label must not be {BOOTSTRAP!r} nor contain ':'", field="label")
    return label


class OperatorKeyService:
    """Named operator keys: issued (shown once, hashed), listed, revoked, verified."""

    def __init__(self, db: Database, cache: KeyCache[str]) -> None:
        self.db = db
        self.cache = cache

    async def create(self, actor: AuditActor, label: str, *, reason: str | None = None) -> IssuedOperatorKey:
        label = check_label(label)
        raw = OPERATOR_KEY_PREFIX + secrets.token_urlsafe(24)
        key_id = new_id()
        prefix = raw[: len(OPERATOR_KEY_PREFIX) + 4]
        async with self.db.transaction() as conn:
            taken = (
                await conn.execute(
                    select(operator_keys.c.id).where(
                        operator_keys.c.label == label, operator_keys.c.revoked_at.is_(None)
                    )
                )
            ).first()
            if taken is not None:
                raise Conflict(
                    f"a live operator key is already labelled {label!r}", code="label_taken", field="label"
                )
            await conn.execute(
                insert(operator_keys).values(
                    id=key_id,
                    label=label,
                    prefix=prefix,
                    key_hash=hash_key(raw),
                    created_at=utcnow(),
                    created_by=actor.who,
                )
            )
            await record_audit(
                conn,
                actor,
                "operator_key.created",
                target=str(key_id),
                after={"label": label, "prefix": prefix},
                reason=reason,
            )
        return IssuedOperatorKey(id=key_id, label=label, prefix=prefix, api_key=raw)

    async def revoke(self, actor: AuditActor, label: str, *, reason: str | None = None) -> OperatorKeyRow:
        """Revoke the live key with this label (or this id)."""
        match = operator_keys.c.label == label.strip()
        with contextlib.suppress(ValueError):
            match = match | (operator_keys.c.id == uuid.UUID(label))
        async with self.db.transaction() as conn:
            row = (
                await conn.execute(
                    update(operator_keys)
                    .where(match, operator_keys.c.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                    .returning(*operator_keys.c)
                )
            ).first()
            if row is None:
                raise NotFound(
                    f"no live operator key {label!r}", code="operator_key_not_found", field="label"
                )
            await record_audit(
                conn,
                actor,
                "operator_key.revoked",
                target=str(row.id),
                before={"label": row.label, "prefix": row.prefix, "revoked": False},
                after={"label": row.label, "prefix": row.prefix, "revoked": True},
                reason=reason,
            )
        self.cache.revoked(row.key_hash)
        return _key_row(row)

    async def list(self, *, include_revoked: bool = False) -> list[OperatorKeyRow]:
        stmt = select(operator_keys).order_by(operator_keys.c.created_at, operator_keys.c.label)
        if not include_revoked:
            stmt = stmt.where(operator_keys.c.revoked_at.is_(None))
        async with self.db.reading() as conn:
            return [_key_row(r) for r in (await conn.execute(stmt)).all()]

    async def label_of(self, raw_key: str) -> str | None:
        """The label of the live operator key ``raw_key`` is, or None (cached like tenant keys)."""
        key_hash = hash_key(raw_key)
        cached = self.cache.get(key_hash)
        if cached is not None:
            return cached
        generation = self.cache.generation
        async with self.db.engine.connect() as conn:
            label = (await conn.execute(_LIVE_OPERATOR_KEY, {"key_hash": key_hash})).scalar_one_or_none()
        if label is not None:
            self.cache.put(key_hash, label, generation)
        return label

    async def any_live(self) -> bool:
        async with self.db.engine.connect() as conn:
            return bool((await conn.execute(_ANY_LIVE_OPERATOR_KEY)).scalar_one())


def _key_row(row: Any) -> OperatorKeyRow:
    return OperatorKeyRow(
        id=row.id,
        label=row.label,
        prefix=row.prefix,
        created_at=_as_utc(row.created_at),
        created_by=row.created_by,
        revoked_at=_as_utc(row.revoked_at) if row.revoked_at else None,
    )
