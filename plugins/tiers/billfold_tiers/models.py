"""The tiers plugin's tables, on its own MetaData (``__bind_key__ = "tiers"``)."""

from __future__ import annotations

import datetime
import uuid

from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from billfold import ModelBase


class TierMonth(ModelBase):
    """One organization's standing on one channel for one UTC calendar month.

    Created when the month's first event is priced (or when the previous month closes), from the
    month before: the step in force, the downgrade counter and how the step was qualified. Every
    priced event adds its billed units to ``volume`` in the usage write's transaction."""

    __tablename__ = "tiers_months"
    __bind_key__ = "tiers"

    org_id: Mapped[uuid.UUID] = mapped_column(GUID(length=16), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    step: Mapped[str] = mapped_column(String(64))
    volume: Mapped[int] = mapped_column(BigInteger, default=0)
    downgrade_counter: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(16))
    """volume | retained | manual | default"""
    pin_until: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True))


class TierPin(ModelBase):
    """An operator's pin: the organization stays on ``step`` (optionally until ``until``)."""

    __tablename__ = "tiers_pins"
    __bind_key__ = "tiers"

    org_id: Mapped[uuid.UUID] = mapped_column(GUID(length=16), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(64))
    until: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    reason: Mapped[str] = mapped_column(String(500), default="")
    pinned_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True))
