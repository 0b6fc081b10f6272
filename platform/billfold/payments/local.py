"""The built-in local payment provider: no network, Stripe's test-method behaviour.

Active when no other provider answers (``trylast``). Test methods behave like Stripe's:
``pm_card_visa`` (and any other ``pm_card_*``/``pm_*`` id) succeeds,
``pm_card_threeDSecure2Required`` / ``pm_card_authenticationRequired`` need 3-D Secure
(``requires_action``), ``pm_card_chargeDeclined`` / ``pm_card_visa_chargeDeclined`` decline.
A pending local payment is completed by POST /v1/billing/{organizationId}/dev/complete-local
(404 in production). State lives in this process (customers and methods) and in the payments
table (intents), which is what complete-local reads.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from billfold.errors import StartupError
from billfold.hookspecs import hookimpl
from billfold.payments.provider import (
    CardDeclined,
    Intent,
    InvalidWebhook,
    Method,
    ProviderEvent,
    Session,
    SetupIntent,
)

DECLINING = {"pm_card_chargeDeclined", "pm_card_visa_chargeDeclined", "pm_card_chargeCustomerFail"}
NEEDS_3DS = {
    "pm_card_threeDSecure2Required",
    "pm_card_authenticationRequired",
    "pm_card_threeDSecureRequired",
}
SEPA = {"pm_sepa_debit", "pm_sepaDebit"}


def _id(prefix: str) -> str:
    return f"{prefix}_local_{secrets.token_hex(12)}"


def describe(method_id: str) -> Method:
    if method_id in SEPA or method_id.startswith("pm_sepa"):
        return Method(id=method_id, type="sepa_debit", last4="3000")
    last4 = "0002" if method_id in DECLINING else "3184" if method_id in NEEDS_3DS else "4242"
    return Method(id=method_id, type="card", brand="visa", last4=last4, exp_month=12, exp_year=2034)


class LocalProvider:
    name = "local"

    def __init__(self) -> None:
        self._customers: dict[str, str] = {}
        self._methods: dict[str, list[str]] = {}
        self._default: dict[str, str] = {}
        self._idempotent: dict[str, Intent] = {}

    async def get_or_create_customer(
        self, *, org_id: str, existing_id: str | None, name: str, metadata: dict[str, str]
    ) -> str:
        return existing_id or f"cus_local_{org_id.replace('-', '')[:24]}"

    async def create_payment(
        self,
        *,
        customer_id: str,
        amount_cents: int,
        currency: str,
        payment_method_id: str | None,
        off_session: bool,
        idempotency_key: str,
        metadata: dict[str, str],
    ) -> Intent:
        if idempotency_key in self._idempotent:
            return self._idempotent[idempotency_key]
        intent_id = _id("pi")
        base: dict[str, Any] = {
            "id": intent_id,
            "amount_cents": amount_cents,
            "currency": currency,
            "client_secret": f"{intent_id}_secret_{secrets.token_hex(8)}",
            "customer_id": customer_id,
            "payment_method_id": payment_method_id,
            "metadata": metadata,
        }
        if payment_method_id is None:
            intent = Intent(status="requires_payment_method", **base)
        elif payment_method_id in DECLINING:
            failed = Intent(
                status="requires_payment_method",
                failure_code="card_declined",
                failure_message="Your card was declined.",
                **base,
            )
            self._idempotent[idempotency_key] = failed
            raise CardDeclined(
                "Your card was declined.",
                code="card_declined",
                provider="local",
                provider_code="card_declined",
                intent=failed,
            )
        elif payment_method_id in NEEDS_3DS:
            intent = Intent(status="requires_action", **base)
        else:
            intent = Intent(status="succeeded", **base)
        self._idempotent[idempotency_key] = intent
        return intent

    async def retrieve_payment(self, payment_id: str) -> Intent:
        for intent in self._idempotent.values():
            if intent.id == payment_id:
                return intent
        raise CardDeclined("no such payment", code="resource_missing", provider="local")

    async def create_setup_intent(self, *, customer_id: str, metadata: dict[str, str]) -> SetupIntent:
        setup_id = _id("seti")
        return SetupIntent(
            id=setup_id,
            status="requires_payment_method",
            client_secret=f"{setup_id}_secret_{secrets.token_hex(8)}",
            customer_id=customer_id,
            metadata=metadata,
        )

    async def retrieve_payment_method(self, payment_method_id: str) -> Method:
        return describe(payment_method_id)

    async def attach_payment_method(self, *, customer_id: str, payment_method_id: str) -> Method:
        if not payment_method_id.startswith("pm_"):
            raise CardDeclined(
                f"No such PaymentMethod: '{payment_method_id}'",
                code="resource_missing",
                provider="local",
                provider_code="resource_missing",
            )
        methods = self._methods.setdefault(customer_id, [])
        if payment_method_id not in methods:
            methods.append(payment_method_id)
        return describe(payment_method_id)

    async def list_payment_methods(self, *, customer_id: str) -> list[Method]:
        return [describe(m) for m in self._methods.get(customer_id, [])]

    async def set_default_payment_method(self, *, customer_id: str, payment_method_id: str) -> None:
        self._default[customer_id] = payment_method_id

    async def create_checkout_session(
        self,
        *,
        customer_id: str,
        amount_cents: int | None,
        currency: str,
        success_url: str,
        cancel_url: str,
        price_ids: list[str],
        metadata: dict[str, str],
    ) -> Session:
        session_id = _id("cs")
        return Session(
            id=session_id,
            url=f"{success_url}{'&' if '?' in success_url else '?'}session_id={session_id}",
            payment_id=session_id if amount_cents is not None else None,
        )

    async def create_portal_session(self, *, customer_id: str, return_url: str) -> Session:
        return Session(id=_id("bps"), url=return_url)

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        raise InvalidWebhook(
            "the local provider sends no webhooks; enable the Stripe plugin to receive them",
            code="webhooks_not_configured",
            provider="local",
        )

    async def close(self) -> None:
        return None


@hookimpl(trylast=True)
def billfold_payment_provider(state: Any) -> LocalProvider:
    return LocalProvider()


@hookimpl
def billfold_startup(state: Any) -> None:
    if state.config.is_production and state.provider.name == "local":
        # The local provider credits without money moving: never in production.
        raise StartupError(
            "environment is production but no payment provider is configured (enable plugins.stripe)"
        )
