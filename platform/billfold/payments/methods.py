"""Provider customers and saved payment methods (cards, SEPA debits)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from advanced_alchemy.filters import OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.clock import now
from billfold.db import Database, dialect_insert, new_id, table_of
from billfold.errors import ValidationFailed
from billfold.orgs.service import OrgService, check_text
from billfold.payments.failures import provider_failure
from billfold.payments.models import PaymentMethod
from billfold.payments.profiles import ProfileRow, ProfileService
from billfold.payments.provider import CardDeclined, Method, PaymentProvider, ProviderError, SetupIntent

logger = logging.getLogger("billfold.payments")

methods = table_of(PaymentMethod)

MAX_METHOD_ID = 255


class MethodRow(msgspec.Struct, frozen=True):
    id: str
    type: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    status: str
    is_default: bool


class PaymentMethodRepository(SQLAlchemyAsyncRepository[PaymentMethod]):
    model_type = PaymentMethod


class MethodService:
    """The organization's customer at the provider, and its saved methods.

    Provider calls never happen inside a database transaction (a slow provider holds no locks)."""

    def __init__(
        self,
        db: Database,
        profiles: ProfileService,
        orgs: OrgService,
        provider: Callable[[], PaymentProvider],
    ) -> None:
        self.db = db
        self.profiles = profiles
        self.orgs = orgs
        self._provider = provider

    @property
    def provider(self) -> PaymentProvider:
        return self._provider()

    async def ensure_customer(self, org_id: uuid.UUID, *, profile: ProfileRow | None = None) -> str:
        """The provider's customer for this organization, created on first use (a caller that has
        just read the profile passes it: no connection is then opened for a known customer)."""
        if profile is None:
            profile = await self.profiles.get(org_id)
        if profile.customer_id and profile.provider == self.provider.name:
            return profile.customer_id
        org = await self.orgs.get(org_id)
        try:
            customer_id: str = await self.provider.get_or_create_customer(
                org_id=str(org_id), existing_id=None, name=org.name, metadata={"org_id": str(org_id)}
            )
        except ProviderError as exc:
            raise provider_failure(exc) from None
        await self.profiles.set_customer(org_id, self.provider.name, customer_id)
        return customer_id

    async def create_setup_intent(self, org_id: uuid.UUID) -> SetupIntent:
        customer_id = await self.ensure_customer(org_id)
        try:
            setup: SetupIntent = await self.provider.create_setup_intent(
                customer_id=customer_id, metadata={"org_id": str(org_id)}
            )
        except ProviderError as exc:
            raise provider_failure(exc) from None
        return setup

    async def add(self, org_id: uuid.UUID, payment_method_id: str, *, make_default: bool) -> MethodRow:
        """Attach a method to the organization's customer and record it (default if asked or first)."""
        check_text(payment_method_id, "payment_method_id", MAX_METHOD_ID, required=True)
        profile = await self.profiles.get(org_id)
        customer_id = await self.ensure_customer(org_id, profile=profile)
        becomes_default = make_default or profile.default_payment_method_id is None
        try:
            method: Method = await self.provider.attach_payment_method(
                customer_id=customer_id, payment_method_id=payment_method_id
            )
            if becomes_default:
                await self.provider.set_default_payment_method(
                    customer_id=customer_id, payment_method_id=method.id
                )
        except CardDeclined as exc:
            if exc.code == "resource_missing":
                raise ValidationFailed(
                    exc.message, code="invalid_payment_method", field="payment_method_id"
                ) from None
            raise provider_failure(exc) from None
        except ProviderError as exc:
            raise provider_failure(exc) from None
        async with self.db.transaction() as conn:
            await self.record(conn, org_id, method)
            if becomes_default:
                await self.profiles.set_default_method(conn, org_id, method.id)
        listed = await self.list(org_id)
        return next(m for m in listed if m.id == method.id)

    async def record(self, conn: AsyncConnection, org_id: uuid.UUID, method: Method) -> None:
        stamp = now()
        await conn.execute(
            dialect_insert(conn)(methods)
            .values(
                id=new_id(),
                org_id=org_id,
                provider=self.provider.name,
                provider_method_id=method.id,
                type=method.type,
                brand=method.brand,
                last4=method.last4,
                exp_month=method.exp_month,
                exp_year=method.exp_year,
                status="ready",
                created_at=stamp,
                updated_at=stamp,
            )
            .on_conflict_do_nothing(index_elements=[methods.c.org_id, methods.c.provider_method_id])
        )

    async def saved_in_browser(self, conn: AsyncConnection, org_id: uuid.UUID, method: Method) -> None:
        """A SetupIntent confirmed with Stripe.js succeeded: record the method, the default if none."""
        await self.record(conn, org_id, method)
        await self.profiles.set_default_if_none(conn, org_id, method.id)

    async def list(self, org_id: uuid.UUID, *, conn: AsyncConnection | None = None) -> list[MethodRow]:
        async with self.db.reading(conn) as c:
            profile = await self.profiles.get(org_id, conn=c)
            async with self.db.session(c) as session:
                rows = await PaymentMethodRepository(session=session).get_many(
                    OrderBy("created_at", "asc"), org_id=org_id
                )
        return [
            MethodRow(
                id=r.provider_method_id,
                type=r.type,
                brand=r.brand,
                last4=r.last4,
                exp_month=r.exp_month,
                exp_year=r.exp_year,
                status=r.status,
                is_default=r.provider_method_id == profile.default_payment_method_id,
            )
            for r in rows
        ]

    async def describe(self, method_id: str | None) -> Method | None:
        """The details of a method saved in the browser, asked of the provider before any
        transaction opens. A provider that cannot answer now leaves the details empty rather than
        failing the webhook."""
        if not method_id:
            return None
        retrieve: Any = getattr(self.provider, "retrieve_payment_method", None)
        if retrieve is None:  # a provider written before the contract asked for it
            return Method(id=method_id)
        try:
            described: Method = await retrieve(method_id)
        except ProviderError as exc:
            logger.warning("payment method %s saved without its details: %s", method_id, exc.message)
            return Method(id=method_id)
        return described
