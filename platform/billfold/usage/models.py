"""Usage tables: priced events, the fraction carried per organization, channel and currency, the
counters that caps and reports read (never the events), plan state, and month closes.

Every table is keyed by organization first (DESIGN §6: it shards by organization id)."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from advanced_alchemy.base import DefaultBase, UUIDv7Base
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Boolean, Date, ForeignKey, Index, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db import JsonDict, utcnow

USAGE_STATUSES = ("accepted", "reserved", "delivered", "failed", "expired")
"""accepted: charged at once. reserved: price held (two-phase send), then delivered (captured),
failed (released) or expired (its hold ran out)."""


class UsageEvent(UUIDv7Base):
    __tablename__ = "usage_events"
    __table_args__ = (
        UniqueConstraint("org_id", "event_id", name="uq_usage_events_org_event"),
        Index("ix_usage_events_org_created", "org_id", "created_at"),
        Index("ix_usage_events_status", "status", "hold_id"),
        Index("ix_usage_events_org_entry", "org_id", "entry_id"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(128))
    """The client's id of the event, unique per organization (its idempotency key)."""
    request_hash: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64))
    message_type: Mapped[str | None] = mapped_column(String(64), default=None)
    category: Mapped[str | None] = mapped_column(String(64), default=None)
    quantity: Mapped[int] = mapped_column(BigInteger)
    """As reported (seconds on a time-billed channel)."""
    billed_quantity: Mapped[int] = mapped_column(BigInteger)
    """Units charged (started increments; 0 for a free send of a session or a known subscriber)."""
    unit_price: Mapped[str] = mapped_column(String(40))
    """The exact decimal price of one billed unit, in minor units, as text (never a float)."""
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    """Charged (accepted, delivered) or held (reserved)."""
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    hold_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    entry_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    cycle_start: Mapped[datetime.date] = mapped_column(Date)
    """The cap cycle the event counted in (its counters are reversed there if it fails)."""
    counted: Mapped[dict[str, int]] = mapped_column(JsonDict, default=dict)
    """What the event added to the cycle counters."""
    tier: Mapped[dict[str, Any] | None] = mapped_column(JsonDict, default=None)
    subscriber_id: Mapped[str | None] = mapped_column(String(128), default=None)
    agent_id: Mapped[str | None] = mapped_column(String(128), default=None)
    session_id: Mapped[str | None] = mapped_column(String(128), default=None)
    call_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    phone_number_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    phone_number_value: Mapped[str | None] = mapped_column(String(32), default=None)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JsonDict, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JsonDict, default=dict)
    """The first answer (minor units), replayed for a repeat of the event."""
    occurred_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    """When the client says it happened: stored and reported, never used to pick a month or a price."""
    created_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    """Acceptance, business time: the billing time."""
    settled_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class UsageCarry(DefaultBase):
    """The exact amount an organization's usage of a channel has cost in one currency, and what was
    charged for it (always round(exact_total)): each event is charged the difference, so N events
    cost round(N x price) at every point in time."""

    __tablename__ = "usage_carry"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    exact_total: Mapped[str] = mapped_column(String(80), default="0")
    charged_cents: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageDaily(DefaultBase):
    """Per organization, UTC day, channel, message type and category: what reports read."""

    __tablename__ = "usage_daily"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[datetime.date] = mapped_column(Date, primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_type: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    category: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    events: Mapped[int] = mapped_column(BigInteger, default=0)
    quantity: Mapped[int] = mapped_column(BigInteger, default=0)
    billed_quantity: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_cents: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageCounter(DefaultBase):
    """A cap counter of one cycle (messages, cost, sms, call, spend, unverified:<channel>)."""

    __tablename__ = "usage_counters"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    cycle_start: Mapped[datetime.date] = mapped_column(Date, primary_key=True)
    counter: Mapped[str] = mapped_column(String(80), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
    warned: Mapped[int] = mapped_column(SmallInteger, default=0)
    """The highest percentage of the cap already announced this cycle (80, 95, 100)."""


class UsageSession(DefaultBase):
    """The start of an organization's charged session (a ``session``-charged message type)."""

    __tablename__ = "usage_sessions"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    session_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True))


class UsageSubscriberMonth(DefaultBase):
    """A subscriber charged for an agent in a UTC month (a ``subscriber_month`` message type)."""

    __tablename__ = "usage_subscriber_months"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    subscriber_id: Mapped[str] = mapped_column(String(128), primary_key=True)


class UsagePlan(DefaultBase):
    """An organization's plan steps (document 003's two ladders), cycle and overage."""

    __tablename__ = "usage_plans"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    message_step: Mapped[str] = mapped_column(String(64))
    budget_step: Mapped[str] = mapped_column(String(64))
    anniversary: Mapped[datetime.date] = mapped_column(Date)
    """The cycle restarts on this day of every month (clamped to the month's last day)."""
    allow_overage: Mapped[bool] = mapped_column(Boolean, default=False)
    """Usage past the step's caps is accepted and counted (paid steps only)."""
    messages_cap: Mapped[int | None] = mapped_column(BigInteger, default=None)
    cost_cap: Mapped[int | None] = mapped_column(BigInteger, default=None)
    sms_cap: Mapped[int | None] = mapped_column(BigInteger, default=None)
    call_cap: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """The operator's caps for this organization; None takes the step's."""
    pending_message_step: Mapped[str | None] = mapped_column(String(64), default=None)
    pending_budget_step: Mapped[str | None] = mapped_column(String(64), default=None)
    pending_effective: Mapped[datetime.date | None] = mapped_column(Date, default=None)
    """A downgrade waits for the next anniversary (then these replace the live steps)."""
    no_cap_reminder_dismissed: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


class MonthClose(DefaultBase):
    """One row per organization and UTC month, written in the closing transaction: exactly once."""

    __tablename__ = "month_closes"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    closed_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
