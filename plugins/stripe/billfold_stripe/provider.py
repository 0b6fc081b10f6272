"""StripeProvider: Billfold's payment-provider contract over the official ``stripe`` SDK.

Only the SDK's async methods are used (``*_async`` over ``stripe.HTTPXClient``), so no call blocks
the event loop. Stripe's objects are mapped to the contract's Structs here and nowhere else; every
``stripe.StripeError`` becomes a :class:`~billfold.payments.provider.ProviderError` subclass.

Off-session payments that need 3-D Secure: real Stripe declines them with a ``CardError`` whose
code is ``authentication_required`` and leaves the PaymentIntent in ``requires_payment_method``.
This provider does not raise for that: it returns the PaymentIntent with status
``requires_action`` (``failure_code="authentication_required"``, and the intent's
``client_secret``), the same answer an on-session 3-D Secure payment gets, so the caller can ask
the customer to come back and authenticate (Stripe.js ``confirmCardPayment(client_secret,
{payment_method})``). Retrieving or receiving such an intent by webhook reports the same status.

Against a fake API (``api_base`` not on stripe.com, e.g. localstripe in tests), parameters only
Stripe knows are left out: ``automatic_payment_methods`` on server-side confirmation. Nothing sends
``payment_method_types``: the SDK's API version (2026-10-28.endive) refuses it as a parameter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import stripe

from billfold import (
    CardDeclined,
    Intent,
    InvalidWebhook,
    Method,
    ProviderError,
    ProviderEvent,
    ProviderUnavailable,
    Session,
    SetupIntent,
)
from billfold_stripe.config import StripeConfig

if TYPE_CHECKING:
    from stripe.params import CustomerCreateParams, PaymentIntentCreateParams, SetupIntentCreateParams
    from stripe.params.checkout import SessionCreateParams as CheckoutSessionCreateParams

logger = logging.getLogger("billfold.stripe")

PROVIDER = "stripe"
SIGNATURE_TOLERANCE_SECONDS = 300
AUTHENTICATION_REQUIRED = "authentication_required"
CHECKOUT_PRODUCT_NAME = "Account credit"
METHOD_TYPES = ("card", "sepa_debit")
"""The method types listed for a customer (one list request each)."""

_CHECKOUT_EVENTS = {
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
}


class StripeProvider:
    """The Stripe payment provider (see :class:`billfold.payments.provider.PaymentProvider`).

    Args:
        config: The validated ``plugins.stripe`` section.
        http_client: The SDK HTTP client to use; by default a ``stripe.HTTPXClient`` with the
            configured timeout. The provider owns it and closes it in :meth:`close`.
    """

    name = PROVIDER

    def __init__(self, config: StripeConfig, *, http_client: stripe.HTTPClient | None = None) -> None:
        self.config = config
        self.publishable_key = config.publishable_key
        self.real_stripe = _is_stripe(config.api_base)
        self._http_client = http_client or stripe.HTTPXClient(timeout=config.timeout_seconds)
        self._client = stripe.StripeClient(
            config.secret_key,
            base_addresses={"api": config.api_base} if config.api_base else None,
            http_client=self._http_client,
            max_network_retries=config.max_network_retries,
        )

    @property
    def client(self) -> stripe.StripeClient:
        """The underlying SDK client (for plugins that need a Stripe call the contract lacks)."""
        return self._client

    # -- customers ---------------------------------------------------------------------------

    async def get_or_create_customer(
        self, *, org_id: str, existing_id: str | None, name: str, metadata: dict[str, str]
    ) -> str:
        """Return ``existing_id`` when Stripe still has that customer, else create one.

        A customer deleted in the Dashboard (or missing, e.g. after switching accounts) is
        replaced by a new one carrying ``metadata.org_id``.
        """
        v1 = self._client.v1
        with _translate_errors():
            if existing_id:
                try:
                    customer = await v1.customers.retrieve_async(existing_id)
                except stripe.InvalidRequestError as exc:
                    if exc.http_status != 404:
                        raise
                    logger.warning(
                        "stripe customer %s of org %s is gone; creating another", existing_id, org_id
                    )
                else:
                    if not customer.to_dict().get("deleted"):
                        return str(customer.id)
                    logger.warning(
                        "stripe customer %s of org %s was deleted; creating another", existing_id, org_id
                    )
            params: CustomerCreateParams = {"metadata": {**metadata, "org_id": org_id}}
            if name:
                params["name"] = name
            # The same org asking twice at once gets one customer; a changed request gets a new key.
            fingerprint = hashlib.sha256(
                json.dumps([existing_id, params], sort_keys=True).encode()
            ).hexdigest()
            created = await v1.customers.create_async(
                params, {"idempotency_key": f"billfold-customer-{org_id}-{fingerprint[:16]}"}
            )
        return str(created.id)

    # -- payments ----------------------------------------------------------------------------

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
        """Create a PaymentIntent and, with a payment method, confirm it at once.

        Off session without a method charges the customer's default payment method
        (``invoice_settings.default_payment_method``). Without any method the intent is
        ``requires_payment_method`` (the browser confirms it with ``client_secret``).

        Raises:
            CardDeclined: The card was declined (``intent`` is set when Stripe returns one).
            ProviderUnavailable: Stripe could not be reached or failed; retry with the same key.
        """
        v1 = self._client.v1
        params: PaymentIntentCreateParams = {
            "amount": amount_cents,
            "currency": currency.lower(),
            "customer": customer_id,
            "metadata": dict(metadata),
        }
        with _translate_errors():
            method_id = payment_method_id
            if method_id is None and off_session:
                method_id = await self._default_payment_method(customer_id)
            if method_id is not None:
                params["payment_method"] = method_id
                params["confirm"] = True
                if self.real_stripe:
                    # Confirming on the server, with no return_url: only methods that never redirect
                    # (cards, SEPA Debit). Fakes such as localstripe refuse this parameter.
                    params["automatic_payment_methods"] = {"enabled": True, "allow_redirects": "never"}
                if off_session:
                    params["off_session"] = True
            try:
                created = await v1.payment_intents.create_async(params, {"idempotency_key": idempotency_key})
            except stripe.CardError as exc:
                intent = _intent_from_error(exc)
                if intent is not None and intent.status == "requires_action":
                    return intent
                raise
        return _intent(created.to_dict())

    async def retrieve_payment(self, payment_id: str) -> Intent:
        with _translate_errors():
            intent = await self._client.v1.payment_intents.retrieve_async(payment_id)
        return _intent(intent.to_dict())

    # -- saved methods -----------------------------------------------------------------------

    async def create_setup_intent(self, *, customer_id: str, metadata: dict[str, str]) -> SetupIntent:
        """A SetupIntent for saving a method for later off-session payments (auto-reload).

        The method types are the account's (Dashboard settings), so SEPA Debit is offered where
        it is activated.
        """
        params: SetupIntentCreateParams = {
            "customer": customer_id,
            "usage": "off_session",
            "metadata": dict(metadata),
        }
        with _translate_errors():
            created = await self._client.v1.setup_intents.create_async(params)
        return _setup_intent(created.to_dict())

    async def retrieve_payment_method(self, payment_method_id: str) -> Method:
        with _translate_errors():
            method = await self._client.v1.payment_methods.retrieve_async(payment_method_id)
        return _method(method.to_dict())

    async def attach_payment_method(self, *, customer_id: str, payment_method_id: str) -> Method:
        """Attach the method to the customer (harmless when it already is)."""
        with _translate_errors():
            method = await self._client.v1.payment_methods.attach_async(
                payment_method_id, {"customer": customer_id}
            )
        return _method(method.to_dict())

    async def list_payment_methods(self, *, customer_id: str) -> list[Method]:
        """The customer's cards and SEPA Debit mandates, the default one first."""
        v1 = self._client.v1
        methods: list[Method] = []
        with _translate_errors():
            for method_type in METHOD_TYPES:
                try:
                    page = await v1.payment_methods.list_async(
                        {"customer": customer_id, "type": method_type, "limit": 100}
                    )
                except stripe.InvalidRequestError as exc:
                    # An API that cannot list this type (localstripe answers 400 for sepa_debit).
                    if method_type == "card" or exc.http_status != 400:
                        raise
                    logger.info("stripe: listing %s methods refused: %s", method_type, exc.user_message)
                    continue
                methods.extend(_method(item.to_dict()) for item in page.data)
            default = await self._default_payment_method(customer_id)
        methods.sort(key=lambda method: method.id != default)
        return methods

    async def set_default_payment_method(self, *, customer_id: str, payment_method_id: str) -> None:
        with _translate_errors():
            await self._client.v1.customers.update_async(
                customer_id, {"invoice_settings": {"default_payment_method": payment_method_id}}
            )

    async def _default_payment_method(self, customer_id: str) -> str | None:
        customer = (await self._client.v1.customers.retrieve_async(customer_id)).to_dict()
        settings = customer.get("invoice_settings") or {}
        return _id(settings.get("default_payment_method"))

    # -- hosted pages ------------------------------------------------------------------------

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
        """A Checkout page: a one-off payment of ``amount_cents``, or a subscription to ``price_ids``.

        The session and its PaymentIntent carry ``metadata`` plus ``purpose=checkout``, so the
        ``checkout.session.completed`` and ``payment_intent.succeeded`` webhooks find the org.
        """
        tagged = {**metadata, "purpose": "checkout"}
        params: CheckoutSessionCreateParams = {
            "customer": customer_id,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": tagged,
        }
        if "org_id" in metadata:
            params["client_reference_id"] = metadata["org_id"]
        if price_ids:
            params["mode"] = "subscription"
            params["line_items"] = [{"price": price_id, "quantity": 1} for price_id in price_ids]
            params["subscription_data"] = {"metadata": tagged}
        elif amount_cents is not None and amount_cents > 0:
            params["mode"] = "payment"
            params["line_items"] = [
                {
                    "price_data": {
                        "currency": currency.lower(),
                        "unit_amount": amount_cents,
                        "product_data": {"name": CHECKOUT_PRODUCT_NAME},
                    },
                    "quantity": 1,
                }
            ]
            params["payment_intent_data"] = {"metadata": tagged}
        else:
            raise ProviderError(
                "a checkout session needs a positive amount_cents or price_ids",
                code="invalid_request",
                provider=PROVIDER,
            )
        with _translate_errors():
            session = await self._client.v1.checkout.sessions.create_async(params)
        return Session(id=session.id, url=str(session.url))

    async def create_portal_session(self, *, customer_id: str, return_url: str) -> Session:
        with _translate_errors():
            session = await self._client.v1.billing_portal.sessions.create_async(
                {"customer": customer_id, "return_url": return_url}
            )
        return Session(id=session.id, url=str(session.url))

    # -- webhooks ----------------------------------------------------------------------------

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """Verify ``Stripe-Signature`` against the endpoint secret and reduce the event.

        Raises:
            InvalidWebhook: The signature is missing, wrong or too old (5 minutes), or the payload
                is not an event.
        """
        signature = _header(headers, "stripe-signature")
        if not signature:
            raise InvalidWebhook("missing Stripe-Signature header", code="invalid_webhook", provider=PROVIDER)
        _check_not_from_the_future(signature)
        try:
            event = stripe.Webhook.construct_event(
                payload, signature, self.config.webhook_secret, tolerance=SIGNATURE_TOLERANCE_SECONDS
            )
        except stripe.SignatureVerificationError as exc:
            raise InvalidWebhook(
                f"Stripe signature does not verify: {exc.user_message}",
                code="invalid_webhook",
                provider=PROVIDER,
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidWebhook(
                f"not a Stripe event: {exc}", code="invalid_webhook", provider=PROVIDER
            ) from None
        return _event(event.to_dict())

    async def close(self) -> None:
        await self._http_client.close_async()


def _check_not_from_the_future(signature: str) -> None:
    """The SDK refuses signatures older than the tolerance but not ones dated ahead: a captured
    request signed for tomorrow would replay until then. Refuse timestamps more than the
    tolerance ahead of our (real) clock too."""
    stamps = [part[2:] for part in signature.split(",") if part.strip().startswith("t=")]
    try:
        stamp = int(stamps[0].strip()) if stamps else None
    except ValueError:
        stamp = None
    if stamp is None:
        raise InvalidWebhook("Stripe-Signature has no timestamp", code="invalid_webhook", provider=PROVIDER)
    if stamp > time.time() + SIGNATURE_TOLERANCE_SECONDS:
        raise InvalidWebhook(
            "Stripe-Signature is dated in the future (more than 300 s ahead)",
            code="invalid_webhook",
            provider=PROVIDER,
        )


def _is_stripe(api_base: str | None) -> bool:
    """Whether the API is Stripe's own (api_base unset or a stripe.com host), not a fake."""
    host = (urlsplit(api_base).hostname or "") if api_base else "api.stripe.com"
    return host == "stripe.com" or host.endswith(".stripe.com")


# -- errors ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    """Turn ``stripe.StripeError`` raised inside the block into the contract's errors."""
    try:
        yield
    except stripe.StripeError as exc:
        raise _provider_error(exc) from exc


def _provider_error(exc: stripe.StripeError) -> ProviderError:
    message = exc.user_message or str(exc) or type(exc).__name__
    error = exc.error
    if isinstance(exc, stripe.CardError):
        decline_code = getattr(error, "decline_code", None) if error is not None else None
        return CardDeclined(
            message,
            code="card_declined",
            provider=PROVIDER,
            provider_code=decline_code or exc.code or "card_declined",
            intent=_intent_from_error(exc),
        )
    status = exc.http_status or 0
    if isinstance(exc, stripe.InvalidRequestError) and (exc.code == "resource_missing" or status == 404):
        # The same answer as the built-in local provider for an unknown payment method or payment
        # (the core turns it into 400 invalid_payment_method when attaching): the contract has no
        # "not found" error of its own yet.
        return CardDeclined(
            message, code="resource_missing", provider=PROVIDER, provider_code="resource_missing"
        )
    if isinstance(exc, stripe.APIConnectionError | stripe.APIError | stripe.RateLimitError) or status >= 500:
        return ProviderUnavailable(
            f"Stripe is unavailable: {message}",
            code="provider_unavailable",
            provider=PROVIDER,
            provider_code=exc.code or type(exc).__name__,
            retryable=True,
        )
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        code = "provider_misconfigured"
    elif isinstance(exc, stripe.IdempotencyError):
        code = "idempotency_conflict"
    else:
        code = "invalid_request"
    return ProviderError(message, code=code, provider=PROVIDER, provider_code=exc.code or type(exc).__name__)


def _intent_from_error(exc: stripe.StripeError) -> Intent | None:
    """The PaymentIntent Stripe returns inside a card error (real Stripe does; localstripe not)."""
    error = exc.error
    payment_intent = getattr(error, "payment_intent", None) if error is not None else None
    if payment_intent is None:
        return None
    data = payment_intent.to_dict() if isinstance(payment_intent, stripe.StripeObject) else payment_intent
    if not isinstance(data, dict) or not data.get("id"):
        return None
    if not data.get("last_payment_error") and error is not None:
        data = {**data, "last_payment_error": error.to_dict()}
    return _intent(data)


# -- mapping (from plain dicts: ``StripeObject.to_dict()`` or a webhook's JSON) ----------------


def _id(value: Any) -> str | None:
    """The id of an expandable field, whether Stripe sent the id or the expanded object."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        found = value.get("id")
        return str(found) if found else None
    found = getattr(value, "id", None)
    return str(found) if found else None


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(key): str(item) for key, item in value.items() if item is not None}


def _intent(data: Mapping[str, Any]) -> Intent:
    error = data.get("last_payment_error") or {}
    charge = data.get("latest_charge")
    charge = charge if isinstance(charge, Mapping) else {}
    failure_code = error.get("decline_code") or error.get("code") or charge.get("failure_code")
    failure_message = error.get("message") or charge.get("failure_message")
    status = str(data.get("status") or "requires_payment_method")
    authentication = AUTHENTICATION_REQUIRED in (error.get("code"), error.get("decline_code"))
    if status == "requires_payment_method" and authentication:
        status = "requires_action"  # see the module docstring
    return Intent(
        id=str(data["id"]),
        status=status,
        amount_cents=int(data.get("amount") or 0),
        currency=str(data.get("currency") or ""),
        client_secret=data.get("client_secret"),
        customer_id=_id(data.get("customer")),
        payment_method_id=_id(data.get("payment_method")) or _id(charge.get("payment_method")),
        failure_code=failure_code,
        failure_message=failure_message,
        metadata=_strings(data.get("metadata")),
    )


def _setup_intent(data: Mapping[str, Any]) -> SetupIntent:
    return SetupIntent(
        id=str(data["id"]),
        status=str(data.get("status") or "requires_payment_method"),
        client_secret=data.get("client_secret"),
        customer_id=_id(data.get("customer")),
        payment_method_id=_id(data.get("payment_method")),
        metadata=_strings(data.get("metadata")),
    )


def _method(data: Mapping[str, Any]) -> Method:
    method_type = str(data.get("type") or "card")
    details = data.get(method_type) or {}
    return Method(
        id=str(data["id"]),
        type=method_type,
        brand=details.get("brand") if method_type == "card" else None,
        last4=details.get("last4"),
        exp_month=details.get("exp_month"),
        exp_year=details.get("exp_year"),
    )


def _checkout_intent(event_type: str, session: Mapping[str, Any]) -> Intent | None:
    """The payment behind a Checkout session (None for one without a PaymentIntent: subscriptions)."""
    payment_intent = session.get("payment_intent")
    intent_id = _id(payment_intent)
    if intent_id is None:
        return None
    if isinstance(payment_intent, Mapping) and payment_intent.get("status"):
        status = str(payment_intent["status"])
    elif event_type == "checkout.session.async_payment_failed":
        status = "requires_payment_method"
    elif session.get("payment_status") in ("paid", "no_payment_required"):
        status = "succeeded"
    else:
        status = "processing"  # a delayed method (SEPA Debit): async_payment_succeeded follows
    return Intent(
        id=intent_id,
        status=status,
        amount_cents=int(session.get("amount_total") or 0),
        currency=str(session.get("currency") or ""),
        customer_id=_id(session.get("customer")),
        metadata=_strings(session.get("metadata")),
    )


def _event(event: Mapping[str, Any]) -> ProviderEvent:
    event_type = str(event.get("type") or "")
    data = (event.get("data") or {}).get("object") or {}
    if not isinstance(data, Mapping) or not event.get("id"):
        raise InvalidWebhook("not a Stripe event", code="invalid_webhook", provider=PROVIDER)
    intent: Intent | None = None
    setup_intent: SetupIntent | None = None
    session_id: str | None = None
    if event_type.startswith("payment_intent."):
        intent = _intent(data)
    elif event_type.startswith("setup_intent."):
        setup_intent = _setup_intent(data)
    elif event_type in _CHECKOUT_EVENTS:
        session_id = _id(data)
        intent = _checkout_intent(event_type, data)
    return ProviderEvent(
        id=str(event["id"]),
        type=event_type,
        provider=PROVIDER,
        intent=intent,
        setup_intent=setup_intent,
        session_id=session_id,
        data=dict(data),
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value
