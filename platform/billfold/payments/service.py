"""Payment service: billing accounts, auto-reload, top-ups, payment methods, provider events.

Money comes in through one function, `credit_payment`, which credits a provider payment exactly
once however often and in whatever order the request and the webhooks report it: the payment
row is claimed with a conditional UPDATE (`credited_entry_id IS NULL`), and the ledger entry
carries a unique reference as a second guard. Provider calls never happen inside a database
transaction, so a slow provider holds no locks; a provider failure records nothing as paid.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.db import dialect_insert, new_id, table_of, utcnow
from billfold.errors import (
    NotFound,
    PaymentRequired,
    ProviderRefused,
    Unprocessable,
    ValidationFailed,
)
from billfold.errors import ProviderUnavailable as ProviderUnavailableError
from billfold.events.outbox import emit
from billfold.ledger.service import AccountRow
from billfold.payments import profiles
from billfold.payments.models import Payment, PaymentMethod, ProviderEvent
from billfold.payments.profiles import AutoReloadChange, FieldNames, ProfileRow
from billfold.payments.provider import (
    CardDeclined,
    Intent,
    Method,
    ProviderError,
    ProviderUnavailable,
    Session,
    SetupIntent,
)
from billfold.payments.provider import ProviderEvent as WebhookEvent
from billfold.plugins import call_all

if TYPE_CHECKING:
    from billfold.state import AppState

logger = logging.getLogger("billfold.payments")

payments = table_of(Payment)
methods = table_of(PaymentMethod)
provider_events = table_of(ProviderEvent)
_profiles = profiles.profiles

PURPOSES = ("top_up", "auto_reload", "checkout")
CREDITING_EVENTS = (
    "payment_intent.succeeded",
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
)
FAILING_EVENTS = ("payment_intent.payment_failed", "checkout.session.async_payment_failed")


class BillingView(msgspec.Struct, frozen=True):
    account: AccountRow
    profile: ProfileRow


class TopUpResult(msgspec.Struct, frozen=True):
    intent: Intent
    credited: bool


class CreditOutcome(msgspec.Struct, frozen=True):
    credited: bool
    org_id: uuid.UUID | None
    entry_id: int | None


def provider_failure(exc: ProviderError) -> Exception:
    """Translate a provider error into the API's error: 402 for a decline, 502
    ``provider_unavailable`` for an outage (retry), 502 with the provider error's own code
    (``provider_misconfigured``, ``invalid_request``...) for a refusal that a retry will not cure."""
    if isinstance(exc, CardDeclined):
        return PaymentRequired(
            exc.message or "the card was declined",
            code="card_declined",
            fix="Use another payment method.",
            provider=exc.provider,
            provider_code=exc.provider_code,
        )
    if exc.retryable or isinstance(exc, ProviderUnavailable):
        return ProviderUnavailableError(
            exc.message or "the payment provider is unavailable",
            code="provider_unavailable",
            fix="Nothing was charged or credited; retry the same request (with the same Idempotency-Key).",
            provider=exc.provider,
            provider_code=exc.provider_code,
        )
    # The provider answered and said no: the same request will be refused again.
    misconfigured = exc.code == "provider_misconfigured"
    return ProviderRefused(
        exc.message or "the payment provider refused the request",
        code=exc.code or "provider_error",
        fix=(
            "Nothing was charged or credited. The operator must fix the payment provider's "
            "credentials or account; retrying will not help until then."
            if misconfigured
            else "Nothing was charged or credited; the provider refuses this request as sent, "
            "so retrying it unchanged will not help."
        ),
        provider=exc.provider,
        provider_code=exc.provider_code,
    )


def month_start(now: datetime.datetime) -> datetime.datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class PaymentService:
    def __init__(self, state: AppState) -> None:
        self.state = state

    @property
    def provider(self) -> Any:
        return self.state.provider

    # -- billing account -------------------------------------------------------------------

    async def billing_view(self, conn: AsyncConnection, org_id: uuid.UUID) -> BillingView:
        account = await self.state.ledger.account(conn, org_id)
        profile = await profiles.get_profile(conn, org_id)
        return BillingView(account=account, profile=profile)

    async def update_auto_reload(
        self, conn: AsyncConnection, org_id: uuid.UUID, change: AutoReloadChange, names: FieldNames
    ) -> BillingView:
        current = await profiles.get_profile(conn, org_id, for_update=True)
        values = profiles.validate_change(change, current, names)
        await profiles.apply_change(conn, org_id, values)
        await self.state.ledger.refresh_watermark(conn, org_id)
        view = await self.billing_view(conn, org_id)
        if (
            values.get("auto_reload_enabled")
            and view.account.free_cents < view.profile.auto_reload_minimum_cents
        ):
            await self.request_auto_reload(conn, org_id, view.account.free_cents)
        return view

    # -- customers and methods ---------------------------------------------------------------

    async def ensure_customer(self, org_id: uuid.UUID) -> str:
        """The provider's customer for this organization, created on first use (outside any tx)."""
        state = self.state
        async with state.engine.connect() as conn:
            profile = await profiles.get_profile(conn, org_id)
            org = await state.orgs.get(conn, org_id)
        if profile.customer_id and profile.provider == self.provider.name:
            return profile.customer_id
        try:
            customer_id: str = await self.provider.get_or_create_customer(
                org_id=str(org_id), existing_id=None, name=org.name, metadata={"org_id": str(org_id)}
            )
        except ProviderError as exc:
            raise provider_failure(exc) from None
        async with state.engine.begin() as conn:
            await profiles.set_customer(conn, org_id, self.provider.name, customer_id)
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

    async def add_payment_method(
        self, org_id: uuid.UUID, payment_method_id: str, *, make_default: bool
    ) -> Method:
        """Attach a method to the organization's customer and record it (default if asked or first)."""
        if not payment_method_id:
            raise ValidationFailed("payment_method_id is required", field="payment_method_id")
        customer_id = await self.ensure_customer(org_id)
        try:
            method: Method = await self.provider.attach_payment_method(
                customer_id=customer_id, payment_method_id=payment_method_id
            )
            async with self.state.engine.connect() as conn:
                profile = await profiles.get_profile(conn, org_id)
            becomes_default = make_default or profile.default_payment_method_id is None
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
        async with self.state.engine.begin() as conn:
            await self._record_method(conn, org_id, method)
            if becomes_default:
                await profiles.set_default_method(conn, org_id, method.id)
        return method

    async def _record_method(self, conn: AsyncConnection, org_id: uuid.UUID, method: Method) -> None:
        now = utcnow()
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
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[methods.c.org_id, methods.c.provider_method_id])
        )

    async def list_methods(self, org_id: uuid.UUID) -> tuple[list[Any], str | None]:
        async with self.state.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(methods).where(methods.c.org_id == org_id).order_by(methods.c.created_at)
                )
            ).all()
            profile = await profiles.get_profile(conn, org_id)
        return list(rows), profile.default_payment_method_id

    # -- top-ups -----------------------------------------------------------------------------

    def check_amount(self, amount_cents: int, currency: str, *, field: str = "amount_cents") -> None:
        limits = self.state.config.currencies[currency]
        if not limits.minimum_top_up <= amount_cents <= limits.maximum_top_up:
            raise ValidationFailed(
                f"{field} must be between {limits.minimum_top_up} and {limits.maximum_top_up} "
                f"{currency.upper()} minor units",
                code="invalid_amount",
                field=field,
                extra={"minimum_cents": limits.minimum_top_up, "maximum_cents": limits.maximum_top_up},
            )

    async def top_up(
        self,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        payment_method_id: str | None,
        idempotency_key: str | None,
        currency: str | None = None,
        amount_field: str = "amount_cents",
    ) -> TopUpResult:
        """Charge the organization and credit the balance when the payment succeeds in the request.

        Declines are 402 `card_declined`, 3-D Secure is 402 `authentication_required` (the webhook
        credits after the tenant confirms), a provider outage is 502 with nothing recorded as paid.
        """
        async with self.state.engine.connect() as conn:
            view = await self.billing_view(conn, org_id)
        org_currency = view.account.currency
        if currency is not None and currency.lower() != org_currency:
            raise ValidationFailed(
                f"currency must be the organization's currency ({org_currency})",
                code="currency_mismatch",
                field="currency",
            )
        self.check_amount(amount_cents, org_currency, field=amount_field)
        method = payment_method_id or view.profile.default_payment_method_id
        customer_id = await self.ensure_customer(org_id)
        key = f"topup:{org_id}:{idempotency_key or uuid.uuid4()}"
        metadata = {"org_id": str(org_id), "purpose": "top_up"}
        try:
            intent: Intent = await self.provider.create_payment(
                customer_id=customer_id,
                amount_cents=amount_cents,
                currency=org_currency,
                payment_method_id=method,
                off_session=False,
                idempotency_key=key,
                metadata=metadata,
            )
        except CardDeclined as exc:
            if exc.intent is not None:
                async with self.state.engine.begin() as conn:
                    await self.record_payment(conn, org_id, exc.intent, purpose="top_up")
            raise provider_failure(exc) from None
        except ProviderError as exc:
            raise provider_failure(exc) from None
        credited = False
        async with self.state.engine.begin() as conn:
            await self.record_payment(conn, org_id, intent, purpose="top_up")
            if intent.status == "succeeded":
                outcome = await self.credit_payment(conn, intent, purpose="top_up", org_id=org_id)
                credited = outcome.credited
        if intent.status == "requires_action":
            raise PaymentRequired(
                "the card requires authentication (3-D Secure)",
                code="authentication_required",
                fix="Confirm the payment with Stripe.js using client_secret; "
                "the balance is credited when it succeeds.",
                extra={
                    "next_action": "confirm_payment",
                    "client_secret": intent.client_secret,
                    "payment_intent_id": intent.id,
                    "status": intent.status,
                },
            )
        return TopUpResult(intent=intent, credited=credited)

    async def record_payment(
        self, conn: AsyncConnection, org_id: uuid.UUID, intent: Intent, *, purpose: str
    ) -> None:
        """Insert or refresh the payment row for a provider intent (never touches the credit)."""
        now = utcnow()
        await conn.execute(
            dialect_insert(conn)(payments)
            .values(
                id=new_id(),
                org_id=org_id,
                provider=self.provider.name,
                provider_payment_id=intent.id,
                amount_cents=intent.amount_cents,
                currency=intent.currency,
                status=intent.status,
                purpose=purpose,
                client_secret=intent.client_secret,
                payment_method_id=intent.payment_method_id,
                failure_code=intent.failure_code,
                failure_message=intent.failure_message,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[payments.c.provider, payments.c.provider_payment_id])
        )
        # A late, stale report must not move a payment back from succeeded.
        await conn.execute(
            update(payments)
            .where(
                payments.c.provider == self.provider.name,
                payments.c.provider_payment_id == intent.id,
                payments.c.status != "succeeded",
            )
            .values(
                status=intent.status,
                failure_code=intent.failure_code,
                failure_message=intent.failure_message,
                updated_at=now,
            )
        )

    async def credit_payment(
        self, conn: AsyncConnection, intent: Intent, *, purpose: str, org_id: uuid.UUID | None = None
    ) -> CreditOutcome:
        """Credit a succeeded provider payment exactly once (idempotent under any report order)."""
        if org_id is None:
            meta_org = intent.metadata.get("org_id")
            if not meta_org:
                logger.warning("payment %s has no org_id metadata; not credited", intent.id)
                return CreditOutcome(credited=False, org_id=None, entry_id=None)
            org_id = uuid.UUID(meta_org)
        await self.record_payment(conn, org_id, intent, purpose=intent.metadata.get("purpose", purpose))
        claimed = (
            await conn.execute(
                update(payments)
                .where(
                    payments.c.provider == self.provider.name,
                    payments.c.provider_payment_id == intent.id,
                    payments.c.credited_entry_id.is_(None),
                )
                .values(status="succeeded", credited_entry_id=0, updated_at=utcnow())
                .returning(
                    payments.c.id,
                    payments.c.org_id,
                    payments.c.amount_cents,
                    payments.c.currency,
                    payments.c.purpose,
                )
            )
        ).first()
        if claimed is None:
            return CreditOutcome(credited=False, org_id=org_id, entry_id=None)
        account = await self.state.ledger.account(conn, claimed.org_id)
        if claimed.currency != account.currency:
            logger.error(
                "payment %s is in %s, account in %s: not credited",
                intent.id,
                claimed.currency,
                account.currency,
            )
            await conn.execute(
                update(payments)
                .where(payments.c.id == claimed.id)
                .values(credited_entry_id=None, failure_code="currency_mismatch")
            )
            return CreditOutcome(credited=False, org_id=claimed.org_id, entry_id=None)
        description = {
            "top_up": "Top-up",
            "auto_reload": "Auto-reload",
            "checkout": "Checkout payment",
        }.get(claimed.purpose, "Payment")
        posted = await self.state.ledger.credit(
            conn,
            claimed.org_id,
            claimed.amount_cents,
            description=description,
            metadata={
                "payment_intent_id": intent.id,
                "provider": self.provider.name,
                "purpose": claimed.purpose,
            },
            reference=f"payment:{self.provider.name}:{intent.id}",
        )
        await conn.execute(
            update(payments).where(payments.c.id == claimed.id).values(credited_entry_id=posted.entry.id)
        )
        await self.state.orgs.mark_paid(conn, claimed.org_id)
        await emit(
            conn,
            "payment.succeeded",
            {
                "payment_intent_id": intent.id,
                "amount_cents": claimed.amount_cents,
                "purpose": claimed.purpose,
            },
            org_id=claimed.org_id,
        )
        if claimed.purpose == "auto_reload":
            await self._reload_finished(conn, claimed.org_id, intent, succeeded=True)
        return CreditOutcome(credited=True, org_id=claimed.org_id, entry_id=posted.entry.id)

    async def complete_local(self, org_id: uuid.UUID, payment_intent_id: str | None) -> Intent:
        """Development only: mark a pending local payment succeeded and credit it."""
        async with self.state.engine.begin() as conn:
            stmt = select(payments).where(
                payments.c.org_id == org_id,
                payments.c.provider == "local",
                payments.c.credited_entry_id.is_(None),
                payments.c.status.in_(
                    ("requires_action", "requires_payment_method", "requires_confirmation", "processing")
                ),
            )
            if payment_intent_id:
                stmt = stmt.where(payments.c.provider_payment_id == payment_intent_id)
            row = (await conn.execute(stmt.order_by(payments.c.created_at.desc()).limit(1))).first()
            if row is None:
                raise NotFound("no pending local payment for this organization", code="payment_not_found")
            intent = Intent(
                id=row.provider_payment_id,
                status="succeeded",
                amount_cents=row.amount_cents,
                currency=row.currency,
                client_secret=row.client_secret,
                payment_method_id=row.payment_method_id,
                metadata={"org_id": str(org_id), "purpose": row.purpose},
            )
            await self.credit_payment(conn, intent, purpose=row.purpose, org_id=org_id)
        return intent

    # -- checkout and portal ---------------------------------------------------------------------

    async def checkout(
        self,
        org_id: uuid.UUID,
        *,
        amount_cents: int | None,
        success_url: str,
        cancel_url: str,
        price_ids: list[str],
    ) -> Session:
        async with self.state.engine.connect() as conn:
            account = await self.state.ledger.account(conn, org_id)
        if amount_cents is not None:
            self.check_amount(amount_cents, account.currency, field="amountCents")
        customer_id = await self.ensure_customer(org_id)
        try:
            session: Session = await self.provider.create_checkout_session(
                customer_id=customer_id,
                amount_cents=amount_cents,
                currency=account.currency,
                success_url=success_url,
                cancel_url=cancel_url,
                price_ids=price_ids,
                metadata={"org_id": str(org_id), "purpose": "checkout"},
            )
        except ProviderError as exc:
            raise provider_failure(exc) from None
        return session

    async def portal(self, org_id: uuid.UUID, return_url: str) -> Session:
        customer_id = await self.ensure_customer(org_id)
        try:
            session: Session = await self.provider.create_portal_session(
                customer_id=customer_id, return_url=return_url
            )
        except ProviderError as exc:
            raise provider_failure(exc) from None
        return session

    # -- provider webhooks -------------------------------------------------------------------------

    async def handle_event(self, event: WebhookEvent) -> bool:
        """Apply a verified provider event once. Returns False for a duplicate delivery."""
        saved: Method | None = None
        if event.type == "setup_intent.succeeded" and event.setup_intent is not None:
            saved = await self._describe_method(event.setup_intent.payment_method_id)
        async with self.state.engine.begin() as conn:
            fresh = (
                await conn.execute(
                    dialect_insert(conn)(provider_events)
                    .values(provider=event.provider, event_id=event.id, type=event.type)
                    .on_conflict_do_nothing(
                        index_elements=[provider_events.c.provider, provider_events.c.event_id]
                    )
                    .returning(provider_events.c.event_id)
                )
            ).first()
            if fresh is None:
                return False
            intent = event.intent
            if event.type in CREDITING_EVENTS and intent is not None:
                # A checkout session paid by a delayed method (SEPA) completes unpaid (`processing`);
                # it is credited by its later async_payment_succeeded event.
                if intent.status == "succeeded":
                    await self.credit_payment(
                        conn, intent, purpose=intent.metadata.get("purpose", "checkout")
                    )
            elif event.type in FAILING_EVENTS and intent is not None:
                await self._payment_failed(conn, intent)
            elif event.type == "setup_intent.succeeded" and event.setup_intent is not None:
                await self._setup_succeeded(conn, event.setup_intent, saved)
        await call_all(self.state.pm.hook.billfold_provider_webhook(state=self.state, event=event))
        return True

    async def _payment_failed(self, conn: AsyncConnection, intent: Intent) -> None:
        org = intent.metadata.get("org_id")
        if not org:
            return
        org_id = uuid.UUID(org)
        purpose = intent.metadata.get("purpose", "top_up")
        failed = msgspec.structs.replace(intent, failure_code=intent.failure_code or "payment_failed")
        await self.record_payment(conn, org_id, failed, purpose=purpose)
        await emit(
            conn,
            "payment.failed",
            {"payment_intent_id": intent.id, "failure_code": failed.failure_code, "purpose": purpose},
            org_id=org_id,
        )
        if purpose == "auto_reload":
            await self._reload_finished(conn, org_id, failed, succeeded=False)

    async def _describe_method(self, method_id: str | None) -> Method | None:
        """The details of a method saved in the browser, asked of the provider before the event's
        transaction opens (no row is locked while the provider answers). A provider that cannot
        answer now leaves the details empty rather than failing the webhook."""
        if not method_id:
            return None
        retrieve = getattr(self.provider, "retrieve_payment_method", None)
        if retrieve is None:  # a provider written before the contract asked for it
            return Method(id=method_id)
        try:
            described: Method = await retrieve(method_id)
        except ProviderError as exc:
            logger.warning("payment method %s saved without its details: %s", method_id, exc.message)
            return Method(id=method_id)
        return described

    async def _setup_succeeded(
        self, conn: AsyncConnection, setup: SetupIntent, method: Method | None
    ) -> None:
        org = setup.metadata.get("org_id")
        if not org or method is None or not setup.payment_method_id:
            return
        org_id = uuid.UUID(org)
        await self._record_method(conn, org_id, method)
        profile = await profiles.get_profile(conn, org_id, for_update=True)
        if profile.default_payment_method_id is None:
            await profiles.set_default_method(conn, org_id, setup.payment_method_id)

    # -- auto-reload ---------------------------------------------------------------------------------

    async def request_auto_reload(self, conn: AsyncConnection, org_id: uuid.UUID, free_cents: int) -> bool:
        """Claim the organization's single in-flight reload and queue the off-session charge.

        Called in the debiting transaction (through the ledger hook). The claim is one conditional
        UPDATE, so concurrent debits start at most one reload; the charge itself runs in the
        worker after commit, so the debit never waits on the provider."""
        claimed = (
            await conn.execute(
                update(_profiles)
                .where(
                    _profiles.c.org_id == org_id,
                    _profiles.c.auto_reload_enabled.is_(True),
                    _profiles.c.reload_paused.is_(False),
                    _profiles.c.reload_in_flight.is_(False),
                    _profiles.c.auto_reload_minimum_cents > free_cents,
                )
                .values(reload_in_flight=True)
                .returning(_profiles.c.auto_reload_amount_cents, _profiles.c.auto_reload_monthly_limit_cents)
            )
        ).first()
        if claimed is None:
            return False
        amount, limit = claimed
        if limit is not None:
            spent = await self.auto_reload_spent_this_month(conn, org_id)
            if spent + amount > limit:
                await conn.execute(
                    update(_profiles).where(_profiles.c.org_id == org_id).values(reload_in_flight=False)
                )
                await emit(
                    conn,
                    "auto_reload.limit_reached",
                    {"monthly_limit_cents": limit, "spent_cents": spent, "amount_cents": amount},
                    org_id=org_id,
                )
                return False
        await emit(
            conn, "auto_reload.requested", {"amount_cents": amount, "free_cents": free_cents}, org_id=org_id
        )
        return True

    async def auto_reload_spent_this_month(self, conn: AsyncConnection, org_id: uuid.UUID) -> int:
        since = month_start(utcnow())
        spent = (
            await conn.execute(
                select(func.coalesce(func.sum(payments.c.amount_cents), 0)).where(
                    payments.c.org_id == org_id,
                    payments.c.purpose == "auto_reload",
                    payments.c.status.in_(("succeeded", "processing")),
                    payments.c.created_at >= since,
                )
            )
        ).scalar_one()
        return int(spent)

    async def run_auto_reload(self, org_id: uuid.UUID, amount_cents: int, request_id: int) -> None:
        """Worker side: the off-session charge for a queued reload (at-least-once safe: the
        provider idempotency key is the outbox event id)."""
        async with self.state.engine.connect() as conn:
            view = await self.billing_view(conn, org_id)
        profile = view.profile
        if not profile.reload_in_flight:
            return
        if (
            not profile.auto_reload_enabled
            or profile.default_payment_method_id is None
            or profile.customer_id is None
        ):
            async with self.state.engine.begin() as conn:
                await conn.execute(
                    update(_profiles).where(_profiles.c.org_id == org_id).values(reload_in_flight=False)
                )
            return
        try:
            intent: Intent = await self.provider.create_payment(
                customer_id=profile.customer_id,
                amount_cents=amount_cents,
                currency=view.account.currency,
                payment_method_id=profile.default_payment_method_id,
                off_session=True,
                idempotency_key=f"auto_reload:{org_id}:{request_id}",
                metadata={"org_id": str(org_id), "purpose": "auto_reload"},
            )
        except CardDeclined as exc:
            failed = exc.intent or Intent(
                id=f"failed_reload_{request_id}",
                status="requires_payment_method",
                amount_cents=amount_cents,
                currency=view.account.currency,
                metadata={"org_id": str(org_id), "purpose": "auto_reload"},
            )
            failed = msgspec.structs.replace(
                failed, failure_code=exc.provider_code or exc.code, failure_message=exc.message
            )
            async with self.state.engine.begin() as conn:
                await self.record_payment(conn, org_id, failed, purpose="auto_reload")
                await self._reload_finished(conn, org_id, failed, succeeded=False)
            return
        # ProviderUnavailable propagates: the worker retries the event later, in_flight stays set.
        async with self.state.engine.begin() as conn:
            await self.record_payment(conn, org_id, intent, purpose="auto_reload")
            if intent.status == "succeeded":
                await self.credit_payment(conn, intent, purpose="auto_reload", org_id=org_id)
            elif intent.status == "requires_action":
                await self._reload_finished(conn, org_id, intent, succeeded=False)

    async def _reload_finished(
        self, conn: AsyncConnection, org_id: uuid.UUID, intent: Intent, *, succeeded: bool
    ) -> None:
        if succeeded:
            await conn.execute(
                update(_profiles)
                .where(_profiles.c.org_id == org_id)
                .values(reload_in_flight=False, reload_failures=0, reload_action=None)
            )
            await emit(
                conn,
                "auto_reload.succeeded",
                {"payment_intent_id": intent.id, "amount_cents": intent.amount_cents},
                org_id=org_id,
            )
            return
        profile = await profiles.get_profile(conn, org_id, for_update=True)
        failures = profile.reload_failures + 1
        limit = self.state.config.auto_reload.max_consecutive_failures
        paused = failures >= limit
        needs_auth = intent.status == "requires_action"
        action = {
            "type": "authentication_required" if needs_auth else "payment_method_declined",
            "next_action": "confirm_payment" if needs_auth else "update_payment_method",
            "payment_intent_id": intent.id,
            "client_secret": intent.client_secret if needs_auth else None,
            "amount_cents": intent.amount_cents,
            "failure_code": intent.failure_code
            or ("authentication_required" if needs_auth else "card_declined"),
            "message": (
                "Confirm the payment with Stripe.js using client_secret."
                if needs_auth
                else "The card was declined: add another payment method and make it the default."
            ),
            "occurred_at": utcnow().isoformat(),
        }
        await conn.execute(
            update(_profiles)
            .where(_profiles.c.org_id == org_id)
            .values(
                reload_in_flight=False, reload_failures=failures, reload_paused=paused, reload_action=action
            )
        )
        await emit(conn, "auto_reload.failed", {**action, "consecutive_failures": failures}, org_id=org_id)
        if paused:
            await self.state.ledger.refresh_watermark(conn, org_id)
            await emit(conn, "auto_reload.paused", {"consecutive_failures": failures}, org_id=org_id)

    async def requires_action(self, org_id: uuid.UUID) -> ProfileRow:
        async with self.state.engine.connect() as conn:
            return await profiles.get_profile(conn, org_id)

    async def require_customer_method(self, org_id: uuid.UUID) -> None:
        async with self.state.engine.connect() as conn:
            profile = await profiles.get_profile(conn, org_id)
        if not profile.has_payment_method:
            raise Unprocessable(
                "no payment method on file", code="payment_method_required", field="payment_method_id"
            )
