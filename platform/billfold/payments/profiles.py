"""Billing profiles: auto-reload settings, the provider customer and the default payment method."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.config import AutoReloadDefaults
from billfold.db import table_of
from billfold.errors import Unprocessable, ValidationFailed
from billfold.payments.models import BillingProfile

profiles = table_of(BillingProfile)

_UNSET: Any = msgspec.UNSET


class ProfileRow(msgspec.Struct, frozen=True):
    org_id: uuid.UUID
    auto_reload_enabled: bool
    auto_reload_minimum_cents: int
    auto_reload_amount_cents: int
    auto_reload_monthly_limit_cents: int | None
    provider: str | None
    customer_id: str | None
    default_payment_method_id: str | None
    reload_in_flight: bool
    reload_failures: int
    reload_paused: bool
    reload_action: dict[str, Any] | None

    @property
    def has_payment_method(self) -> bool:
        return self.default_payment_method_id is not None


class AutoReloadChange(msgspec.Struct, frozen=True, kw_only=True):
    """A partial update; UNSET fields are left as they are."""

    enabled: bool | msgspec.UnsetType = _UNSET
    minimum_cents: int | msgspec.UnsetType = _UNSET
    amount_cents: int | msgspec.UnsetType = _UNSET
    monthly_limit_cents: int | msgspec.UnsetType | None = _UNSET


class FieldNames(msgspec.Struct, frozen=True):
    """How one API document names the auto-reload fields, so errors name the caller's field."""

    enabled: str = "auto_reload_enabled"
    minimum: str = "auto_reload_minimum_cents"
    amount: str = "auto_reload_amount_cents"
    monthly_limit: str = "auto_reload_monthly_limit_cents"


async def ensure_profile(conn: AsyncConnection, org_id: uuid.UUID, defaults: AutoReloadDefaults) -> None:
    await conn.execute(
        profiles.insert().values(
            org_id=org_id,
            auto_reload_enabled=False,
            auto_reload_minimum_cents=defaults.minimum_cents,
            auto_reload_amount_cents=defaults.amount_cents,
            auto_reload_monthly_limit_cents=defaults.monthly_limit_cents,
        )
    )


async def get_profile(conn: AsyncConnection, org_id: uuid.UUID, *, for_update: bool = False) -> ProfileRow:
    stmt = select(profiles).where(profiles.c.org_id == org_id)
    if for_update and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).one()
    return ProfileRow(
        org_id=row.org_id,
        auto_reload_enabled=row.auto_reload_enabled,
        auto_reload_minimum_cents=row.auto_reload_minimum_cents,
        auto_reload_amount_cents=row.auto_reload_amount_cents,
        auto_reload_monthly_limit_cents=row.auto_reload_monthly_limit_cents,
        provider=row.provider,
        customer_id=row.customer_id,
        default_payment_method_id=row.default_payment_method_id,
        reload_in_flight=row.reload_in_flight,
        reload_failures=row.reload_failures,
        reload_paused=row.reload_paused,
        reload_action=row.reload_action,
    )


def validate_change(change: AutoReloadChange, current: ProfileRow, names: FieldNames) -> dict[str, Any]:
    """Check an auto-reload change against the rules shared by every billing document.

    Enabling needs both the minimum and the amount in the same request, amount > 0, minimum >= 0,
    monthly limit >= 0 or null (400 naming the field), and a payment method on file (422
    ``payment_method_required``). Disabling always works.
    """
    values: dict[str, Any] = {}
    if isinstance(change.minimum_cents, int):
        if change.minimum_cents < 0:
            raise ValidationFailed(f"{names.minimum} must be >= 0", field=names.minimum)
        values["auto_reload_minimum_cents"] = change.minimum_cents
    if isinstance(change.amount_cents, int):
        if change.amount_cents <= 0:
            raise ValidationFailed(f"{names.amount} must be > 0", field=names.amount)
        values["auto_reload_amount_cents"] = change.amount_cents
    if not isinstance(change.monthly_limit_cents, msgspec.UnsetType):
        if change.monthly_limit_cents is not None and change.monthly_limit_cents < 0:
            raise ValidationFailed(f"{names.monthly_limit} must be >= 0 or null", field=names.monthly_limit)
        values["auto_reload_monthly_limit_cents"] = change.monthly_limit_cents
    if change.enabled is True:
        for field, given in ((names.minimum, change.minimum_cents), (names.amount, change.amount_cents)):
            if given is _UNSET:
                raise ValidationFailed(
                    f"{field} is required when enabling auto-reload",
                    code="missing_field",
                    field=field,
                )
        if not current.has_payment_method:
            raise Unprocessable(
                "a payment method must be on file before auto-reload can be enabled",
                code="payment_method_required",
                fix="Save a card (setup-intent, then default-payment-method) and retry.",
                field=names.enabled,
            )
        values["auto_reload_enabled"] = True
        # Turning auto-reload on again clears a pause left by consecutive failures.
        values.update(reload_paused=False, reload_failures=0, reload_action=None)
    elif change.enabled is False:
        values["auto_reload_enabled"] = False
    return values


async def apply_change(conn: AsyncConnection, org_id: uuid.UUID, values: dict[str, Any]) -> None:
    if values:
        await conn.execute(update(profiles).where(profiles.c.org_id == org_id).values(**values))


async def set_customer(conn: AsyncConnection, org_id: uuid.UUID, provider: str, customer_id: str) -> None:
    await conn.execute(
        update(profiles).where(profiles.c.org_id == org_id).values(provider=provider, customer_id=customer_id)
    )


async def set_default_method(conn: AsyncConnection, org_id: uuid.UUID, method_id: str | None) -> None:
    await conn.execute(
        update(profiles).where(profiles.c.org_id == org_id).values(default_payment_method_id=method_id)
    )
