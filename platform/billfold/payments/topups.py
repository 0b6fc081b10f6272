"""Top-ups, hosted checkout and the portal: money a tenant adds on purpose.

A top-up is two short transactions around the provider call (none is open while the provider
answers): the first reads the account and claims the Idempotency-Key, the second records the
payment once (credited at once when it succeeded) and stores the reply under the key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.config import CurrencyConfig
from billfold.db import Database
from billfold.errors import BillfoldError, NotFound, PaymentRequired, ValidationFailed
from billfold.ledger.idempotency import IdempotencyService, IdempotentRequest, Reply
from billfold.ledger.service import LedgerService
from billfold.payments.credits import CreditService
from billfold.payments.failures import provider_failure
from billfold.payments.methods import MethodService
from billfold.payments.profiles import ProfileRow, ProfileService
from billfold.payments.provider import CardDeclined, Intent, PaymentProvider, ProviderError, Session


class TopUpResult(msgspec.Struct, frozen=True):
    intent: Intent
    credited: bool


class _Checked(msgspec.Struct):
    currency: str = ""
    profile: ProfileRow | None = None


class TopUpService:
    def __init__(
        self,
        db: Database,
        *,
        ledger: LedgerService,
        profiles: ProfileService,
        methods: MethodService,
        credits: CreditService,
        idempotency: IdempotencyService,
        currencies: Mapping[str, CurrencyConfig],
        provider: Callable[[], PaymentProvider],
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.profiles = profiles
        self.methods = methods
        self.credits = credits
        self.idempotency = idempotency
        self.currencies = currencies
        self._provider = provider

    @property
    def provider(self) -> PaymentProvider:
        return self._provider()

    def check_amount(self, amount_cents: int, currency: str, *, field: str = "amount_cents") -> None:
        limits = self.currencies[currency]
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
        idempotent: IdempotentRequest | None,
        encode: Callable[[TopUpResult], bytes],
        currency: str | None = None,
        amount_field: str = "amount_cents",
    ) -> Reply:
        """Charge the organization and credit the balance when the payment succeeds in the request.

        Declines are 402 ``card_declined``, 3-D Secure is 402 ``authentication_required`` (the
        webhook or complete-local credits after the tenant confirms), a provider outage is 502 with
        nothing recorded as paid. With an Idempotency-Key, concurrent and later retries — in any
        process — replay the first reply and never charge twice."""
        checked = _Checked()

        async def first_phase(conn: AsyncConnection) -> None:
            account = await self.ledger.account(org_id, conn=conn)
            if currency is not None and currency.lower() != account.currency:
                raise ValidationFailed(
                    f"currency must be the organization's currency ({account.currency})",
                    code="currency_mismatch",
                    field="currency",
                )
            self.check_amount(amount_cents, account.currency, field=amount_field)
            checked.currency = account.currency
            checked.profile = await self.profiles.get(org_id, conn=conn)

        if idempotent is None:
            async with self.db.reading() as conn:
                await first_phase(conn)
        else:
            replay = await self.idempotency.claim_or_wait(idempotent, first_phase)
            if replay is not None:
                return replay
        try:
            return await self._charge(org_id, amount_cents, checked, payment_method_id, idempotent, encode)
        except BaseException:
            if idempotent is not None:
                await self.idempotency.release(idempotent)
            raise

    async def _charge(
        self,
        org_id: uuid.UUID,
        amount_cents: int,
        checked: _Checked,
        payment_method_id: str | None,
        idempotent: IdempotentRequest | None,
        encode: Callable[[TopUpResult], bytes],
    ) -> Reply:
        assert checked.profile is not None
        provider = self.provider
        customer_id = await self.methods.ensure_customer(org_id, profile=checked.profile)
        key = f"topup:{idempotent.provider_key if idempotent else uuid.uuid4()}"
        try:
            intent: Intent = await provider.create_payment(
                customer_id=customer_id,
                amount_cents=amount_cents,
                currency=checked.currency,
                payment_method_id=payment_method_id or checked.profile.default_payment_method_id,
                off_session=False,
                idempotency_key=key,
                metadata={"org_id": str(org_id), "purpose": "top_up"},
            )
        except CardDeclined as exc:
            if exc.intent is not None:
                async with self.db.transaction() as conn:
                    await self.credits.failed(conn, org_id, provider.name, exc.intent, purpose="top_up")
            raise provider_failure(exc) from None
        except ProviderError as exc:
            raise provider_failure(exc) from None
        credited = False
        refusal: BillfoldError | None = None
        async with self.db.transaction() as conn:
            if intent.status == "succeeded":
                credited = (
                    await self.credits.credit(conn, provider.name, intent, purpose="top_up", org_id=org_id)
                ).credited
            else:
                await self.credits.record(conn, org_id, provider.name, intent, purpose="top_up")
            if intent.status == "requires_action":
                refusal = PaymentRequired(
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
            else:
                body = encode(TopUpResult(intent=intent, credited=credited))
                if idempotent is not None:
                    await self.idempotency.finish(conn, idempotent, 201, body)
        if refusal is not None:
            raise refusal
        return Reply(201, body)

    async def checkout(
        self,
        org_id: uuid.UUID,
        *,
        amount_cents: int | None,
        success_url: str,
        cancel_url: str,
        price_ids: list[str],
        amount_field: str = "amountCents",
        purpose: str = "checkout",
        metadata: dict[str, str] | None = None,
    ) -> Session:
        """A hosted checkout page: a one-time payment of ``amount_cents``, or the ``price_ids``."""
        account = await self.ledger.account(org_id)
        if amount_cents is not None:
            self.check_amount(amount_cents, account.currency, field=amount_field)
        customer_id = await self.methods.ensure_customer(org_id)
        provider = self.provider
        try:
            session: Session = await provider.create_checkout_session(
                customer_id=customer_id,
                amount_cents=amount_cents,
                currency=account.currency,
                success_url=success_url,
                cancel_url=cancel_url,
                price_ids=price_ids,
                metadata={"org_id": str(org_id), "purpose": purpose, **(metadata or {})},
            )
        except ProviderError as exc:
            raise provider_failure(exc) from None
        if session.payment_id is not None and amount_cents is not None:
            # The payment the session will make, pending until the provider reports it paid.
            async with self.db.transaction() as conn:
                await self.credits.record(
                    conn,
                    org_id,
                    provider.name,
                    Intent(
                        id=session.payment_id,
                        status="requires_action",
                        amount_cents=amount_cents,
                        currency=account.currency,
                        metadata={"org_id": str(org_id), "purpose": purpose},
                    ),
                    purpose=purpose,
                    announce=False,
                )
        return session

    async def portal(self, org_id: uuid.UUID, return_url: str) -> Session:
        customer_id = await self.methods.ensure_customer(org_id)
        try:
            session: Session = await self.provider.create_portal_session(
                customer_id=customer_id, return_url=return_url
            )
        except ProviderError as exc:
            raise provider_failure(exc) from None
        return session

    async def complete_local(self, org_id: uuid.UUID, payment_id: str | None) -> Intent:
        """Development only: mark a pending local payment (a 3-D Secure payment intent, or a hosted
        checkout session: its id is its payment's) succeeded and credit it, once. Without an id,
        the organization's latest pending one."""
        async with self.db.transaction() as conn:
            row = await self.credits.latest_pending(org_id, "local", payment_id=payment_id, conn=conn)
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
            await self.credits.credit(conn, "local", intent, purpose=row.purpose, org_id=org_id)
        return intent
