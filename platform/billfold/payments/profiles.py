"""Billing profiles: auto-reload settings and state, the provider customer, the default method.

:class:`ProfileService` is the only writer of ``billing_profiles``."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.config import AutoReloadDefaults
from billfold.db import Database, table_of
from billfold.errors import NotFound, Unprocessable, ValidationFailed
from billfold.hookspecs import hookimpl
from billfold.ledger.rows import as_utc
from billfold.ledger.service import MAX_AMOUNT
from billfold.orgs.service import OrgRow
from billfold.payments.models import BillingProfile

profiles = table_of(BillingProfile)
_SPEND_CAP = select(profiles.c.usage_cap_cents).where(profiles.c.org_id == bindparam("org_id"))

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
    reload_rearm_cents: int | None = None
    reload_retry_at: datetime.datetime | None = None
    reload_retried: bool = False
    billing_email: str | None = None
    usage_cap_cents: int | None = None

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
    """How one API document names the auto-reload fields (so errors name the caller's field), and
    which of the two rules it follows when auto-reload is switched on: documents 000, 001 and 004
    want the minimum and the amount in the same request; document 002 validates the merged
    settings (stored values count) and refuses a threshold of 0."""

    enabled: str = "auto_reload_enabled"
    minimum: str = "auto_reload_minimum_cents"
    amount: str = "auto_reload_amount_cents"
    monthly_limit: str = "auto_reload_monthly_limit_cents"
    merged: bool = False


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Document 002's other billing settings; UNSET keeps, None clears."""

    billing_email: str | msgspec.UnsetType | None = _UNSET
    usage_cap_cents: int | msgspec.UnsetType | None = _UNSET


def _profile(row: Any) -> ProfileRow:
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
        reload_rearm_cents=row.reload_rearm_cents,
        reload_retry_at=as_utc(row.reload_retry_at) if row.reload_retry_at else None,
        reload_retried=row.reload_retried,
        billing_email=row.billing_email,
        usage_cap_cents=row.usage_cap_cents,
    )


def validate_change(
    change: AutoReloadChange, current: ProfileRow, names: FieldNames, defaults: AutoReloadDefaults
) -> dict[str, Any]:
    """Check an auto-reload change against the rules of the caller's document.

    Enabling needs the minimum and the amount (in the same request, or — document 002 — in the
    merged settings, where a threshold of 0 is refused), amount > 0, minimum >= 0, monthly limit
    >= 0 or null (400 naming the field), and a payment method on file (422
    ``payment_method_required``). Disabling always works. Document 002's null clears a value back
    to the operator's default.
    """
    values: dict[str, Any] = {}
    if names.merged:
        if change.minimum_cents is None:
            values["auto_reload_minimum_cents"] = defaults.minimum_cents
        if change.amount_cents is None:
            values["auto_reload_amount_cents"] = defaults.amount_cents
    if isinstance(change.minimum_cents, int):
        if not 0 <= change.minimum_cents <= MAX_AMOUNT:
            raise ValidationFailed(f"{names.minimum} must be between 0 and {MAX_AMOUNT}", field=names.minimum)
        values["auto_reload_minimum_cents"] = change.minimum_cents
    if isinstance(change.amount_cents, int):
        if not 0 < change.amount_cents <= MAX_AMOUNT:
            raise ValidationFailed(f"{names.amount} must be between 1 and {MAX_AMOUNT}", field=names.amount)
        values["auto_reload_amount_cents"] = change.amount_cents
    if not isinstance(change.monthly_limit_cents, msgspec.UnsetType):
        if change.monthly_limit_cents is not None and not 0 <= change.monthly_limit_cents <= MAX_AMOUNT:
            raise ValidationFailed(
                f"{names.monthly_limit} must be between 0 and {MAX_AMOUNT}, or null",
                field=names.monthly_limit,
            )
        values["auto_reload_monthly_limit_cents"] = change.monthly_limit_cents
    enabling = change.enabled is True or (
        names.merged and change.enabled is _UNSET and current.auto_reload_enabled
    )
    if names.merged and enabling:
        threshold = values.get("auto_reload_minimum_cents", current.auto_reload_minimum_cents)
        if threshold <= 0:
            raise ValidationFailed(
                f"{names.minimum} must be greater than 0 while auto-recharge is enabled", field=names.minimum
            )
    if change.enabled is True and not names.merged:
        for field, given in ((names.minimum, change.minimum_cents), (names.amount, change.amount_cents)):
            if given is _UNSET:
                raise ValidationFailed(
                    f"{field} is required when enabling auto-reload", code="missing_field", field=field
                )
    if change.enabled is True:
        if not current.has_payment_method:
            raise Unprocessable(
                "a payment method must be on file before auto-reload can be enabled",
                code="payment_method_required",
                fix="Save a card (setup-intent, then default-payment-method) and retry.",
                field=names.enabled,
            )
        values["auto_reload_enabled"] = True
        # Turning auto-reload on again clears a pause left by consecutive failures.
        values.update(
            reload_paused=False,
            reload_failures=0,
            reload_action=None,
            reload_rearm_cents=None,
            reload_retry_at=None,
            reload_retried=False,
        )
    elif change.enabled is False:
        values["auto_reload_enabled"] = False
    return values


class BillingProfileRepository(SQLAlchemyAsyncRepository[BillingProfile]):
    model_type = BillingProfile


class ProfileService:
    """Reads and writes billing profiles; every change goes through here."""

    BILLFOLD_CORE = True

    def __init__(self, db: Database, defaults: AutoReloadDefaults) -> None:
        self.db = db
        self.defaults = defaults

    @hookimpl
    async def billfold_organization_created(self, conn: AsyncConnection, org: OrgRow) -> None:
        """Every organization gets a billing profile with the operator's auto-reload defaults."""
        async with self.db.session(conn) as session:
            await BillingProfileRepository(session=session, auto_refresh=False).add(
                BillingProfile(
                    org_id=org.id,
                    auto_reload_enabled=False,
                    auto_reload_minimum_cents=self.defaults.minimum_cents,
                    auto_reload_amount_cents=self.defaults.amount_cents,
                    auto_reload_monthly_limit_cents=self.defaults.monthly_limit_cents,
                    provider=None,
                    customer_id=None,
                    default_payment_method_id=None,
                    reload_in_flight=False,
                    reload_failures=0,
                    reload_paused=False,
                    reload_action=None,
                    reload_rearm_cents=None,
                )
            )

    async def get(
        self, org_id: uuid.UUID, *, conn: AsyncConnection | None = None, for_update: bool = False
    ) -> ProfileRow:
        stmt = select(profiles).where(profiles.c.org_id == org_id)
        async with self.db.reading(conn) as c:
            if for_update and c.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            row = (await c.execute(stmt)).first()
        if row is None:
            raise NotFound("no billing profile for this organization", code="account_not_found")
        return _profile(row)

    async def spend_cap(self, conn: AsyncConnection, org_id: uuid.UUID) -> int | None:
        """Document 002's spend cap (minor units per cycle, None: none): one constant read, run for
        every usage event."""
        cap: int | None = (await conn.execute(_SPEND_CAP, {"org_id": org_id})).scalar_one_or_none()
        return cap

    async def change_settings(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        change: AutoReloadChange,
        names: FieldNames,
        settings: Settings | None = None,
    ) -> ProfileRow:
        """Validate and apply a settings change (in the caller's transaction)."""
        current = await self.get(org_id, conn=conn, for_update=True)
        values = validate_change(change, current, names, self.defaults)
        if settings is not None:
            for field in ("billing_email", "usage_cap_cents"):
                value = getattr(settings, field)
                if value is not _UNSET:
                    values[field] = value
        await self._set(conn, org_id, **values)
        return await self.get(org_id, conn=conn)

    async def due_retries(
        self, conn: AsyncConnection, at: datetime.datetime, limit: int = 100
    ) -> list[uuid.UUID]:
        """Organizations whose declined reload is due to be tried once more."""
        rows = await conn.execute(
            select(profiles.c.org_id)
            .where(
                profiles.c.reload_retry_at.is_not(None),
                profiles.c.reload_retry_at <= at,
                profiles.c.reload_in_flight.is_(False),
            )
            .limit(limit)
        )
        return [row[0] for row in rows]

    async def retry_started(self, conn: AsyncConnection, org_id: uuid.UUID) -> None:
        await self._set(conn, org_id, reload_retry_at=None, reload_retried=True)

    async def cancel_retry(self, conn: AsyncConnection, org_id: uuid.UUID) -> None:
        await self._set(conn, org_id, reload_retry_at=None)

    async def set_customer(self, org_id: uuid.UUID, provider: str, customer_id: str) -> None:
        async with self.db.transaction() as conn:
            await self._set(conn, org_id, provider=provider, customer_id=customer_id)

    async def set_default_method(
        self, conn: AsyncConnection, org_id: uuid.UUID, method_id: str | None
    ) -> None:
        await self._set(conn, org_id, default_payment_method_id=method_id)

    async def set_default_if_none(self, conn: AsyncConnection, org_id: uuid.UUID, method_id: str) -> None:
        await conn.execute(
            update(profiles)
            .where(profiles.c.org_id == org_id, profiles.c.default_payment_method_id.is_(None))
            .values(default_payment_method_id=method_id)
        )

    # -- the auto-reload state machine (driven by billfold.payments.autoreload) --------------------

    async def claim_reload(
        self, conn: AsyncConnection, org_id: uuid.UUID, free_cents: int
    ) -> tuple[int, int | None] | None:
        """Claim the organization's single in-flight reload when the free balance is under the
        minimum: one conditional UPDATE, so concurrent debits start at most one. Returns (amount,
        monthly limit) when claimed."""
        claimed = (
            await conn.execute(
                update(profiles)
                .where(
                    profiles.c.org_id == org_id,
                    profiles.c.auto_reload_enabled.is_(True),
                    profiles.c.reload_paused.is_(False),
                    profiles.c.reload_in_flight.is_(False),
                    profiles.c.auto_reload_minimum_cents > free_cents,
                )
                .values(reload_in_flight=True)
                .returning(profiles.c.auto_reload_amount_cents, profiles.c.auto_reload_monthly_limit_cents)
            )
        ).first()
        return None if claimed is None else (claimed[0], claimed[1])

    async def reload_done(self, conn: AsyncConnection, org_id: uuid.UUID) -> None:
        await self._set(conn, org_id, reload_in_flight=False)

    async def reload_succeeded(self, conn: AsyncConnection, org_id: uuid.UUID) -> None:
        await self._set(
            conn,
            org_id,
            reload_in_flight=False,
            reload_failures=0,
            reload_action=None,
            reload_rearm_cents=None,
            reload_retry_at=None,
            reload_retried=False,
        )

    async def reload_failed(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        *,
        failures: int,
        paused: bool,
        action: dict[str, Any],
        rearm_cents: int | None,
        retry_at: datetime.datetime | None,
    ) -> None:
        await self._set(
            conn,
            org_id,
            reload_in_flight=False,
            reload_failures=failures,
            reload_paused=paused,
            reload_action=action,
            reload_rearm_cents=rearm_cents,
            reload_retry_at=retry_at,
        )

    async def _set(self, conn: AsyncConnection, org_id: uuid.UUID, **values: Any) -> None:
        if values:
            await conn.execute(update(profiles).where(profiles.c.org_id == org_id).values(**values))
