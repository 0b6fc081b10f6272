"""The payment-provider contract. One provider is active (hook `billfold_payment_provider`);
the built-in local provider answers last, Stripe (plugin `billfold-stripe`) replaces it.

Providers speak in Stripe's vocabulary: intent statuses are Stripe's PaymentIntent statuses
(`succeeded`, `requires_action`, `requires_payment_method`, `requires_confirmation`,
`processing`, `canceled`), so a tenant's integration works the same against either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec


class ProviderError(Exception):
    """A provider refused or failed. ``retryable`` errors (network, 5xx) are 502 to the caller."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        provider: str,
        provider_code: str | None = None,
        retryable: bool = False,
        intent: Intent | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.provider = provider
        self.provider_code = provider_code
        self.retryable = retryable
        self.intent = intent


class CardDeclined(ProviderError):
    """The bank declined the card (402 `card_declined`)."""


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or failed (502 `provider_unavailable`); safe to retry."""


class InvalidWebhook(ProviderError):
    """A webhook whose signature does not verify (400)."""


class Intent(msgspec.Struct, frozen=True, kw_only=True):
    """A payment (Stripe PaymentIntent semantics)."""

    id: str
    status: str
    amount_cents: int
    currency: str
    client_secret: str | None = None
    customer_id: str | None = None
    payment_method_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    metadata: dict[str, str] = {}

    @property
    def needs_action(self) -> bool:
        return self.status == "requires_action"


class SetupIntent(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: str
    client_secret: str | None = None
    customer_id: str | None = None
    payment_method_id: str | None = None
    metadata: dict[str, str] = {}


class Method(msgspec.Struct, frozen=True, kw_only=True):
    """A saved payment method (card or SEPA debit)."""

    id: str
    type: str = "card"
    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """A hosted page (Checkout or customer portal).

    ``payment_id``: when the provider already knows the id of the payment a one-time checkout will
    make (the local provider does: it is the session itself), Billfold records it as pending, so
    that the payment can be completed and credited by that id. Stripe creates its PaymentIntent
    only when the customer pays; its completion event names it."""

    id: str
    url: str
    payment_id: str | None = None


class ProviderEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A verified provider webhook, reduced to what Billfold acts on.

    ``type`` keeps the provider's name (`payment_intent.succeeded`, `checkout.session.completed`,
    `payment_intent.payment_failed`, `setup_intent.succeeded`, ...). ``intent`` / ``setup_intent``
    are filled for the types that carry one; ``data`` is the raw object for plugins."""

    id: str
    type: str
    provider: str
    intent: Intent | None = None
    setup_intent: SetupIntent | None = None
    session_id: str | None = None
    data: dict[str, Any] = {}


@runtime_checkable
class PaymentProvider(Protocol):
    """What a payment provider implements. Every call may raise ProviderError subclasses."""

    name: str

    async def get_or_create_customer(
        self, *, org_id: str, existing_id: str | None, name: str, metadata: dict[str, str]
    ) -> str:
        """Return the provider's customer id for this organization (create it when absent)."""
        ...

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
        """Create and (with a method) confirm a payment. A decline raises CardDeclined; 3-D Secure
        returns status `requires_action`; no method returns `requires_payment_method`."""
        ...

    async def retrieve_payment(self, payment_id: str) -> Intent: ...

    async def create_setup_intent(self, *, customer_id: str, metadata: dict[str, str]) -> SetupIntent: ...

    async def attach_payment_method(self, *, customer_id: str, payment_method_id: str) -> Method:
        """Attach a method to the customer (a decline at attach raises CardDeclined)."""
        ...

    async def retrieve_payment_method(self, payment_method_id: str) -> Method:
        """A method's details (type, brand, last4, expiry), for methods saved outside Billfold's
        requests (a SetupIntent confirmed in the browser, reported by webhook)."""
        ...

    async def list_payment_methods(self, *, customer_id: str) -> list[Method]: ...

    async def set_default_payment_method(self, *, customer_id: str, payment_method_id: str) -> None: ...

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
    ) -> Session: ...

    async def create_portal_session(self, *, customer_id: str, return_url: str) -> Session: ...

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """Verify the signature and parse; raise InvalidWebhook when it does not verify."""
        ...

    async def close(self) -> None: ...
