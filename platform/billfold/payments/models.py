"""Payment tables: billing profiles (auto-reload, customer), methods, payments, provider events."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from advanced_alchemy.base import DefaultBase, UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db import JsonDict, utcnow


class BillingProfile(DefaultBase):
    __tablename__ = "billing_profiles"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    auto_reload_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_reload_minimum_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    auto_reload_amount_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    auto_reload_monthly_limit_cents: Mapped[int | None] = mapped_column(BigInteger, default=None)
    provider: Mapped[str | None] = mapped_column(String(32), default=None)
    customer_id: Mapped[str | None] = mapped_column(String(255), default=None)
    default_payment_method_id: Mapped[str | None] = mapped_column(String(255), default=None)
    reload_in_flight: Mapped[bool] = mapped_column(Boolean, default=False)
    reload_failures: Mapped[int] = mapped_column(Integer, default=0)
    reload_paused: Mapped[bool] = mapped_column(Boolean, default=False)
    reload_action: Mapped[dict[str, Any] | None] = mapped_column(JsonDict, default=None)
    """What the tenant must do after a failed auto-reload (decline or 3-D Secure), or None."""
    reload_rearm_cents: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """After a failed reload, the free balance it failed at: the next debit below it tries again."""
    reload_retry_at: Mapped[datetime.datetime | None] = mapped_column(
        DateTimeUTC(timezone=True), default=None
    )
    """When a failed reload is tried once more (business time; document 004: after 24 h)."""
    reload_retried: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """The scheduled retry of the last failure was made (a second failure tells the tenant)."""
    billing_email: Mapped[str | None] = mapped_column(String(254), default=None)
    usage_cap_cents: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Document 002's monthly spend cap (None: no cap), enforced on usage."""
    updated_at: Mapped[datetime.datetime] = mapped_column(
        DateTimeUTC(timezone=True), default=utcnow, onupdate=utcnow
    )


class PaymentMethod(UUIDv7AuditBase):
    __tablename__ = "payment_methods"
    __table_args__ = (UniqueConstraint("org_id", "provider_method_id"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_method_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32), default="card")
    brand: Mapped[str | None] = mapped_column(String(32), default=None)
    last4: Mapped[str | None] = mapped_column(String(4), default=None)
    exp_month: Mapped[int | None] = mapped_column(Integer, default=None)
    exp_year: Mapped[int | None] = mapped_column(Integer, default=None)
    status: Mapped[str] = mapped_column(String(16), default="ready")


class Payment(UUIDv7AuditBase):
    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("provider", "provider_payment_id"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_payment_id: Mapped[str] = mapped_column(String(255))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(40))
    purpose: Mapped[str] = mapped_column(String(16))
    """top_up | auto_reload | checkout"""
    client_secret: Mapped[str | None] = mapped_column(String(255), default=None)
    payment_method_id: Mapped[str | None] = mapped_column(String(255), default=None)
    failure_code: Mapped[str | None] = mapped_column(String(64), default=None)
    failure_message: Mapped[str | None] = mapped_column(String(500), default=None)
    credited_entry_id: Mapped[int | None] = mapped_column(BigInteger, default=None)


class ProviderEvent(DefaultBase):
    __tablename__ = "provider_events"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    outcome: Mapped[str] = mapped_column(String(32), default="applied", server_default="applied")
    """applied | ignored (nothing to do) | unknown_organization | unknown_payment (acknowledged, kept)."""
