"""The alerts plugin's tables, on its own MetaData (``__bind_key__ = "alerts"``)."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from billfold import ModelBase, UUIDModel


class Endpoint(UUIDModel):
    """A tenant's webhook endpoint: where events go, which ones, and the secrets that sign them."""

    __tablename__ = "alerts_endpoints"
    __bind_key__ = "alerts"

    org_id: Mapped[uuid.UUID] = mapped_column(GUID(length=16), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JsonB)
    status: Mapped[str] = mapped_column(String(16), default="enabled")
    """enabled | disabled"""
    disabled_reason: Mapped[str | None] = mapped_column(String(64), default=None)
    description: Mapped[str] = mapped_column(String(500), default="")
    secret: Mapped[str] = mapped_column(String(120))
    previous_secret: Mapped[str | None] = mapped_column(String(120), default=None)
    previous_secret_expires_at: Mapped[datetime.datetime | None] = mapped_column(
        DateTimeUTC(timezone=True), default=None
    )
    """Real time: until then deliveries carry a signature with each secret."""


class AlertSettings(ModelBase):
    """An organization's balance levels and which of them have fired (re-armed when free is back)."""

    __tablename__ = "alerts_settings"
    __bind_key__ = "alerts"

    org_id: Mapped[uuid.UUID] = mapped_column(GUID(length=16), primary_key=True)
    thresholds: Mapped[list[int]] = mapped_column(JsonB)
    """Minor units, highest first; empty: no low-balance levels."""
    fired: Mapped[list[int]] = mapped_column(JsonB)
    """The levels whose ``billing.balance_low`` went out and that have not re-armed yet."""
    depleted: Mapped[bool] = mapped_column(default=False)
    """``billing.balance_depleted`` went out and the free balance has not been above 0 since."""
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True))


class Delivery(UUIDModel):
    """One event for one endpoint: the exact body sent on every attempt, and what happened."""

    __tablename__ = "alerts_deliveries"
    __bind_key__ = "alerts"
    __table_args__ = (Index("ix_alerts_deliveries_due", "status", "next_attempt_at"),)

    org_id: Mapped[uuid.UUID] = mapped_column(GUID(length=16), index=True)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(GUID(length=16), index=True)
    event_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending | delivered | failed"""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status_codes: Mapped[list[Any]] = mapped_column(JsonB)
    """The HTTP status of each attempt (null where no answer came)."""
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    next_attempt_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    """Real time. While an attempt runs it is the lease: a crashed worker's delivery is due again."""
    delivered_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
