"""Organizations (tenants) and their API keys."""

from __future__ import annotations

import datetime
import uuid

from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column


class Organization(UUIDv7AuditBase):
    __tablename__ = "organizations"

    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    creator: Mapped[str] = mapped_column(String(200), default="operator")
    organization_type: Mapped[str] = mapped_column(String(16), default="free")
    """`free` until the first payment succeeds, then `paid`."""
    status: Mapped[str] = mapped_column(String(16), default="verified")
    """verified | unverified | blocked (an operator sets it)."""
    suspended_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    """When the organization was blocked (None while it is not)."""


class ApiKey(UUIDv7AuditBase):
    __tablename__ = "api_keys"

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(24))
    """The first characters of the key, kept to tell keys apart; the key itself is never stored."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    revoked_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
