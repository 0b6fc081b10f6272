"""Audit rows (append-only) and named operator keys."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from advanced_alchemy.base import IdentityBase, UUIDv7Base
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db import JsonDict, utcnow


class AuditEvent(IdentityBase):
    """One operator action: who did what to which organization, the state before and after, why,
    and the request that carried it. Rows are only ever inserted (a trigger refuses UPDATE and
    DELETE); the id orders them and is the cursor."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_org_id_id", "org_id", "id"),
        Index("ix_audit_events_action_id", "action", "id"),
        Index("ix_audit_events_actor_id", "actor", "id"),
        Index("ix_audit_events_created_at", "created_at"),
    )

    created_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    """Real time (not the business clock): when the action was taken."""
    actor: Mapped[str] = mapped_column(String(200))
    """An operator key's label, ``bootstrap`` (BILLFOLD_ADMIN_API_KEY), ``cli:<user>``, or another
    interface's ``<interface>:<who>``."""
    action: Mapped[str] = mapped_column(String(64))
    org_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    """No foreign key: the record outlives what it names."""
    target: Mapped[str | None] = mapped_column(String(200), default=None)
    """What the action created or changed inside the organization (a ledger entry, a key)."""
    before: Mapped[dict[str, Any] | None] = mapped_column(JsonDict, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JsonDict, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    tracking_id: Mapped[str | None] = mapped_column(String(64), default=None)


class OperatorKey(UUIDv7Base):
    """A named operator key: only its hash is stored, the key is shown once."""

    __tablename__ = "operator_keys"
    __table_args__ = (
        Index(
            "uq_operator_keys_live_label",
            "label",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    label: Mapped[str] = mapped_column(String(100))
    """Unique among live keys (a revoked key's label may be given again)."""
    prefix: Mapped[str] = mapped_column(String(24))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    revoked_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
