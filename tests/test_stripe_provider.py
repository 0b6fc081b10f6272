"""The Stripe plugin: its provider against localstripe (started by the tests, on 127.0.0.1),
Checkout and the billing portal against recorded Stripe responses, and its config section."""

# Fixtures imported from stripe_support are requested by parameter name, which pyflakes reads
# as a redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from billfold.api.app import Billfold
from billfold.config import ConfigError
from billfold.payments.provider import (
    CardDeclined,
    InvalidWebhook,
    PaymentProvider,
    ProviderError,
    ProviderUnavailable,
)
from billfold_stripe.provider import StripeProvider
from stripe_support import (
    CARD_3DS,
    CARD_DECLINED_AT_ATTACH,
    CARD_DECLINED_AT_CHARGE,
    CARD_OK,
    LocalStripe,
    RecordedStripeHTTPClient,
    WebhookReceiver,
    free_port,
    localstripe,  # noqa: F401  (fixture)
    provider,  # noqa: F401  (fixture)
    recorded,
    recording_http,  # noqa: F401  (fixture)
    sign,
    stripe_config,
    webhook_receiver,  # noqa: F401  (fixture)
)

pytestmark = [
    pytest.mark.stripe,
    # stripe.HTTPXClient passes its form body as `data=`; httpx 0.28 prefers `content=`.
    pytest.mark.filterwarnings("ignore:Use .content=:DeprecationWarning"),
]

ORG = "org_8f14e45f"


async def new_customer(provider: StripeProvider) -> str:
    return await provider.get_or_create_customer(org_id=ORG, existing_id=None, name="Acme", metadata={})


async def pay(provider: StripeProvider, customer: str, method: str | None, **kwargs: Any) -> Any:
    arguments: dict[str, Any] = {
        "customer_id": customer,
        "amount_cents": 2000,
        "currency": "usd",
        "payment_method_id": method,
        "off_session": False,
        "idempotency_key": f"topup-{time.monotonic_ns()}",
        "metadata": {"org_id": ORG, "purpose": "top_up"},
        **kwargs,
    }
    return await provider.create_payment(**arguments)


# -- customers ---------------------------------------------------------------------------------


async def test_provider_implements_the_contract(provider: StripeProvider) -> None:
    assert isinstance(provider, PaymentProvider)
    assert provider.name == "stripe"


async def test_customer_is_created_once_and_replaced_when_deleted(
    provider: StripeProvider, localstripe: LocalStripe
) -> None:
    customer = await provider.get_or_create_customer(
        org_id=ORG, existing_id=None, name="Acme", metadata={"plan": "pro"}
    )
    stored = await localstripe.client.v1.customers.retrieve_async(customer)
    assert stored.name == "Acme"
    assert stored.to_dict()["metadata"] == {"org_id": ORG, "plan": "pro"}

    again = await provider.get_or_create_customer(org_id=ORG, existing_id=customer, name="Acme", metadata={})
    assert again == customer

    await localstripe.client.v1.customers.delete_async(customer)
    replaced = await provider.get_or_create_customer(
        org_id=ORG, existing_id=customer, name="Acme", metadata={}
    )
    assert replaced.startswith("cus_")
    assert replaced != customer


async def test_customer_creation_sends_an_idempotency_key(
    provider: StripeProvider, recording_http: RecordedStripeHTTPClient
) -> None:
    await new_customer(provider)
    (request,) = recording_http.requests_to("/v1/customers")
    assert request.headers["Idempotency-Key"].startswith(f"billfold-customer-{ORG}-")


# -- payments ----------------------------------------------------------------------------------


async def test_successful_payment(
    provider: StripeProvider, localstripe: LocalStripe, recording_http: RecordedStripeHTTPClient
) -> None:
    customer = await new_customer(provider)
    card = await localstripe.card(CARD_OK, customer=customer)

    intent = await pay(provider, customer, card, idempotency_key="topup-1")

    assert intent.status == "succeeded"
    assert intent.id.startswith("pi_")
    assert (intent.amount_cents, intent.currency) == (2000, "usd")
    assert (intent.customer_id, intent.payment_method_id) == (customer, card)
    assert intent.metadata == {"org_id": ORG, "purpose": "top_up"}
    assert intent.client_secret and not intent.needs_action
    (sent,) = recording_http.requests_to("/v1/payment_intents")
    assert sent.headers["Idempotency-Key"] == "topup-1"
    assert sent.params["confirm"] == "true"
    assert "off_session" not in sent.params
    assert not any(key.startswith("automatic_payment_methods") for key in sent.params)  # not on fakes
    assert await provider.retrieve_payment(intent.id) == intent


async def test_3d_secure_then_completion(provider: StripeProvider, localstripe: LocalStripe) -> None:
    customer = await new_customer(provider)
    card = await localstripe.card(CARD_3DS, customer=customer)

    intent = await pay(provider, customer, card)
    assert intent.status == "requires_action"
    assert intent.needs_action
    assert intent.client_secret

    assert await localstripe.authenticate(intent.id, intent.client_secret) == "succeeded"
    completed = await provider.retrieve_payment(intent.id)
    assert completed.status == "succeeded"
    assert completed.amount_cents == 2000


async def test_failed_3d_secure_leaves_the_payment_unpaid(
    provider: StripeProvider, localstripe: LocalStripe
) -> None:
    customer = await new_customer(provider)
    intent = await pay(provider, customer, await localstripe.card(CARD_3DS, customer=customer))
    assert intent.client_secret
    await localstripe.authenticate(intent.id, intent.client_secret, success=False)
    assert (await provider.retrieve_payment(intent.id)).status == "requires_payment_method"


async def test_decline_raises_card_declined(provider: StripeProvider, localstripe: LocalStripe) -> None:
    customer = await new_customer(provider)
    card = await localstripe.card(CARD_DECLINED_AT_CHARGE, customer=customer)

    with pytest.raises(CardDeclined) as caught:
        await pay(provider, customer, card)

    error = caught.value
    assert (error.code, error.provider, error.provider_code) == ("card_declined", "stripe", "card_declined")
    assert not error.retryable
    assert error.intent is None  # localstripe's error carries no PaymentIntent (real Stripe's does)
    assert "declined" in error.message


async def test_real_stripe_decline_carries_its_intent(
    provider: StripeProvider, localstripe: LocalStripe, recording_http: RecordedStripeHTTPClient
) -> None:
    customer = await new_customer(provider)
    card = await localstripe.card(CARD_OK, customer=customer)
    recording_http.answer_next("post", "/v1/payment_intents", "card_error_insufficient_funds", status=402)

    with pytest.raises(CardDeclined) as caught:
        await pay(provider, customer, card)

    error = caught.value
    assert error.provider_code == "insufficient_funds"
    assert error.intent is not None
    assert error.intent.id == "pi_3QNyF4LkdIwHu7ix0Gx8Kd3S"
    assert error.intent.status == "requires_payment_method"
    assert error.intent.failure_code == "insufficient_funds"
    assert error.intent.failure_message == "Your card has insufficient funds."


async def test_decline_at_attach_raises_card_declined(
    provider: StripeProvider, localstripe: LocalStripe
) -> None:
    customer = await new_customer(provider)
    card = await localstripe.card(CARD_DECLINED_AT_ATTACH)
    with pytest.raises(CardDeclined):
        await provider.attach_payment_method(customer_id=customer, payment_method_id=card)


async def test_payment_without_a_method_waits_for_one(provider: StripeProvider) -> None:
    customer = await new_customer(provider)
    intent = await pay(provider, customer, None)
    assert intent.status == "requires_payment_method"
    assert intent.client_secret


async def test_real_stripe_confirms_without_redirects(recording_http: RecordedStripeHTTPClient) -> None:
    """Against api.stripe.com, server-side confirmation asks for methods that never redirect (no
    return_url needed); the request is answered from a recording, nothing leaves the machine."""
    real = StripeProvider(stripe_config(None), http_client=recording_http)
    assert real.real_stripe
    recording_http.answer_next("post", "/v1/payment_intents", "payment_intent_succeeded")
    try:
        intent = await pay(real, "cus_RGx7Lk2pQm9Vn4", "pm_1QNyKxLkdIwHu7ixAz3Sx5Dc", off_session=True)
    finally:
        await real.close()

    assert (intent.id, intent.status) == ("pi_3QNyL2LkdIwHu7ix1Rt6Ws8Q", "succeeded")
    (sent,) = recording_http.sent
    assert sent.params == {
        "amount": "2000",
        "currency": "usd",
        "customer": "cus_RGx7Lk2pQm9Vn4",
        "metadata[org_id]": ORG,
        "metadata[purpose]": "top_up",
        "payment_method": "pm_1QNyKxLkdIwHu7ixAz3Sx5Dc",
        "confirm": "true",
        "automatic_payment_methods[enabled]": "true",
        "automatic_payment_methods[allow_redirects]": "never",
        "off_session": "true",
    }


# -- saved methods and off-session payments -----------------------------------------------------


async def test_setup_intent_attach_and_default_method(
    provider: StripeProvider, localstripe: LocalStripe
) -> None:
    customer = await new_customer(provider)
    setup = await provider.create_setup_intent(customer_id=customer, metadata={"org_id": ORG})
    assert setup.id.startswith("seti_")
    assert setup.status == "requires_payment_method"
    assert setup.client_secret
    assert (setup.customer_id, setup.metadata) == (customer, {"org_id": ORG})

    # The browser confirms it with Stripe.js.
    card = await localstripe.card(CARD_OK)
    confirmed = await localstripe.client.v1.setup_intents.confirm_async(setup.id, {"payment_method": card})
    assert confirmed.status == "succeeded"

    method = await provider.attach_payment_method(customer_id=customer, payment_method_id=card)
    assert method.id == card
    assert (method.type, method.brand, method.last4) == ("card", "visa", "4242")
    assert (method.exp_month, method.exp_year) == (12, 2030)
    again = await provider.attach_payment_method(customer_id=customer, payment_method_id=card)
    assert again == method

    other = await localstripe.card(CARD_OK, customer=customer)
    await provider.set_default_payment_method(customer_id=customer, payment_method_id=card)
    stored = await localstripe.client.v1.customers.retrieve_async(customer)
    assert stored.to_dict()["invoice_settings"]["default_payment_method"] == card

    methods = await provider.list_payment_methods(customer_id=customer)
    assert [m.id for m in methods] == [card, other]  # the default first


async def test_sepa_debit_methods_are_mapped(provider: StripeProvider, localstripe: LocalStripe) -> None:
    customer = await new_customer(provider)
    sepa = await localstripe.sepa_debit()
    method = await provider.attach_payment_method(customer_id=customer, payment_method_id=sepa)
    assert (method.type, method.last4, method.brand) == ("sepa_debit", "3000", None)
    # localstripe answers 400 to listing sepa_debit methods: the cards are still listed.
    card = await localstripe.card(CARD_OK, customer=customer)
    assert [m.id for m in await provider.list_payment_methods(customer_id=customer)] == [card]


async def test_off_session_charge_uses_the_default_method(
    provider: StripeProvider, localstripe: LocalStripe, recording_http: RecordedStripeHTTPClient
) -> None:
    customer = await new_customer(provider)
    card = await localstripe.card(CARD_OK, customer=customer)
    await provider.set_default_payment_method(customer_id=customer, payment_method_id=card)

    intent = await pay(
        provider, customer, None, off_session=True, metadata={"org_id": ORG, "purpose": "auto_reload"}
    )

    assert intent.status == "succeeded"
    assert intent.payment_method_id == card
    (sent,) = recording_http.requests_to("/v1/payment_intents")
    assert (sent.params["off_session"], sent.params["confirm"]) == ("true", "true")
    assert sent.params["payment_method"] == card


async def test_off_session_without_a_default_method(provider: StripeProvider) -> None:
    customer = await new_customer(provider)
    intent = await pay(provider, customer, None, off_session=True)
    assert intent.status == "requires_payment_method"


async def test_off_session_3d_secure_needs_action(provider: StripeProvider, localstripe: LocalStripe) -> None:
    customer = await new_customer(provider)
    card = await localstripe.card(CARD_3DS, customer=customer)
    intent = await pay(provider, customer, card, off_session=True)
    assert intent.status == "requires_action"


async def test_real_stripe_off_session_authentication_required_is_requires_action(
    provider: StripeProvider, localstripe: LocalStripe, recording_http: RecordedStripeHTTPClient
) -> None:
    """Real Stripe declines (402 authentication_required) where localstripe answers requires_action;
    the provider reports both the same way, so auto-reload asks the customer to authenticate."""
    customer = await new_customer(provider)
    card = await localstripe.card(CARD_OK, customer=customer)
    recording_http.answer_next(
        "post", "/v1/payment_intents", "card_error_authentication_required", status=402
    )

    intent = await pay(provider, customer, card, off_session=True)

    assert intent.id == "pi_3QNyE1LkdIwHu7ix1Xy4Pq7M"
    assert intent.status == "requires_action"
    assert intent.failure_code == "authentication_required"
    assert intent.client_secret and intent.client_secret.startswith(intent.id)
    assert intent.metadata == {"org_id": "org_recorded", "purpose": "auto_reload"}


# -- errors ------------------------------------------------------------------------------------


async def test_unreachable_api_is_provider_unavailable_fast() -> None:
    unreachable = StripeProvider(stripe_config(f"http://127.0.0.1:{free_port()}"))
    started = time.monotonic()
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await unreachable.get_or_create_customer(org_id=ORG, existing_id=None, name="Acme", metadata={})
    finally:
        await unreachable.close()
    assert time.monotonic() - started < 2
    assert (caught.value.code, caught.value.retryable) == ("provider_unavailable", True)


@pytest.mark.parametrize(("recording", "status"), [("error_api", 500), ("error_rate_limit", 429)])
async def test_stripe_failures_are_provider_unavailable(
    provider: StripeProvider, recording_http: RecordedStripeHTTPClient, recording: str, status: int
) -> None:
    customer = await new_customer(provider)
    recording_http.answer_next("post", "/v1/payment_intents", recording, status=status)
    with pytest.raises(ProviderUnavailable) as caught:
        await pay(provider, customer, None)
    assert caught.value.retryable


async def test_bad_secret_key_is_a_provider_error(localstripe: LocalStripe) -> None:
    misconfigured = StripeProvider(stripe_config(localstripe.base_url, secret_key="pk_test_not_a_secret"))
    try:
        with pytest.raises(ProviderError) as caught:
            await new_customer(misconfigured)
    finally:
        await misconfigured.close()
    assert caught.value.code == "provider_misconfigured"
    assert not caught.value.retryable


async def test_unknown_objects_are_resource_missing(provider: StripeProvider) -> None:
    """As the local provider answers (the core makes attaching one a 400 invalid_payment_method)."""
    customer = await new_customer(provider)
    with pytest.raises(CardDeclined) as caught:
        await pay(provider, customer, "pm_does_not_exist")
    assert (caught.value.code, caught.value.provider_code) == ("resource_missing", "resource_missing")
    with pytest.raises(CardDeclined) as caught:
        await provider.attach_payment_method(customer_id=customer, payment_method_id="pm_does_not_exist")
    assert caught.value.code == "resource_missing"
    with pytest.raises(CardDeclined) as caught:
        await provider.retrieve_payment("pi_does_not_exist")
    assert caught.value.code == "resource_missing"


async def test_other_refusals_are_invalid_requests(provider: StripeProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.create_payment(
            customer_id="not-a-customer-id",
            amount_cents=2000,
            currency="usd",
            payment_method_id=None,
            off_session=False,
            idempotency_key="k",
            metadata={},
        )
    assert type(caught.value) is ProviderError
    assert (caught.value.code, caught.value.retryable) == ("invalid_request", False)


# -- webhooks ----------------------------------------------------------------------------------


async def test_signed_webhook_from_localstripe_verifies(
    provider: StripeProvider, localstripe: LocalStripe, webhook_receiver: WebhookReceiver
) -> None:
    await localstripe.register_webhook(webhook_receiver.url)
    customer = await new_customer(provider)
    intent = await pay(provider, customer, await localstripe.card(CARD_OK, customer=customer))

    delivery = await webhook_receiver.wait_for("payment_intent.succeeded", object_id=intent.id)
    event = provider.parse_webhook(delivery.payload, delivery.headers)

    assert event.type == "payment_intent.succeeded"
    assert event.id.startswith("evt_")
    assert event.provider == "stripe"
    assert event.intent is not None
    assert (event.intent.id, event.intent.status, event.intent.amount_cents) == (intent.id, "succeeded", 2000)
    assert event.intent.metadata == {"org_id": ORG, "purpose": "top_up"}
    assert event.data["id"] == intent.id
    assert event.setup_intent is None

    with pytest.raises(InvalidWebhook):
        provider.parse_webhook(delivery.payload.replace(b"2000", b"9000"), delivery.headers)
    with pytest.raises(InvalidWebhook):
        provider.parse_webhook(delivery.payload, {})
    with pytest.raises(InvalidWebhook):
        provider.parse_webhook(delivery.payload, {"Stripe-Signature": sign(delivery.payload, "whsec_other")})


async def test_failed_payment_webhook(
    provider: StripeProvider, localstripe: LocalStripe, webhook_receiver: WebhookReceiver
) -> None:
    await localstripe.register_webhook(webhook_receiver.url)
    customer = await new_customer(provider)
    with pytest.raises(CardDeclined):
        await pay(provider, customer, await localstripe.card(CARD_DECLINED_AT_CHARGE, customer=customer))

    delivery = await webhook_receiver.wait_for("payment_intent.payment_failed")
    event = provider.parse_webhook(delivery.payload, delivery.headers)
    assert event.intent is not None
    assert event.intent.status == "requires_payment_method"
    assert event.intent.customer_id == customer


def test_old_or_malformed_webhooks_are_refused(provider: StripeProvider) -> None:
    payload = json.dumps(recorded("event_checkout_session_completed")).encode()
    with pytest.raises(InvalidWebhook):
        provider.parse_webhook(
            payload, {"stripe-signature": sign(payload, timestamp=int(time.time()) - 3600)}
        )
    with pytest.raises(InvalidWebhook):
        provider.parse_webhook(payload, {"stripe-signature": "garbage"})
    with pytest.raises(InvalidWebhook):
        provider.parse_webhook(b"not json", {"stripe-signature": sign(b"not json")})


@pytest.mark.parametrize("expanded", [False, True])
def test_checkout_completed_webhook(provider: StripeProvider, expanded: bool) -> None:
    event = recorded("event_checkout_session_completed")
    if expanded:
        session = event["data"]["object"]
        session["payment_intent"] = {
            "id": session["payment_intent"],
            "object": "payment_intent",
            "status": "succeeded",
        }
    payload = json.dumps(event).encode()

    parsed = provider.parse_webhook(payload, {"stripe-signature": sign(payload)})

    assert parsed.type == "checkout.session.completed"
    assert parsed.session_id == "cs_test_a1K7yZPqR3vB9mWnXc4dLs2Tf8GhJe5UoNi0QpRtYwVx6MbCz"
    assert parsed.intent is not None
    assert parsed.intent.id == "pi_3QNyBxLkdIwHu7ix0Hq5Tz9W"
    assert (parsed.intent.status, parsed.intent.amount_cents, parsed.intent.currency) == (
        "succeeded",
        2500,
        "usd",
    )
    assert parsed.intent.customer_id == "cus_RGx7Lk2pQm9Vn4"
    assert parsed.intent.metadata == {"org_id": "org_recorded", "purpose": "checkout"}


def test_unpaid_checkout_is_processing_and_subscriptions_carry_no_intent(provider: StripeProvider) -> None:
    event = recorded("event_checkout_session_completed")
    event["data"]["object"]["payment_status"] = "unpaid"
    payload = json.dumps(event).encode()
    parsed = provider.parse_webhook(payload, {"stripe-signature": sign(payload)})
    assert parsed.intent is not None and parsed.intent.status == "processing"

    event["data"]["object"].update(mode="subscription", payment_intent=None, subscription="sub_1QNyH")
    payload = json.dumps(event).encode()
    parsed = provider.parse_webhook(payload, {"stripe-signature": sign(payload)})
    assert parsed.intent is None
    assert parsed.session_id is not None
    assert parsed.data["subscription"] == "sub_1QNyH"


async def test_retrieve_payment_method(provider: StripeProvider, localstripe: LocalStripe) -> None:
    card = await localstripe.card(CARD_OK)
    method = await provider.retrieve_payment_method(card)
    assert (method.id, method.type, method.brand, method.last4) == (card, "card", "visa", "4242")
    with pytest.raises(CardDeclined) as caught:
        await provider.retrieve_payment_method("pm_doesnotexist")
    assert caught.value.code == "resource_missing"


async def test_setup_intent_webhook(provider: StripeProvider, localstripe: LocalStripe) -> None:
    """localstripe sends no setup_intent events: sign one around its real SetupIntent object."""
    customer = await new_customer(provider)
    setup = await provider.create_setup_intent(customer_id=customer, metadata={"org_id": ORG})
    card = await localstripe.card(CARD_OK)
    confirmed = await localstripe.client.v1.setup_intents.confirm_async(setup.id, {"payment_method": card})
    event = {
        "id": "evt_1QNyJ0LkdIwHu7ixSetup001",
        "object": "event",
        "type": "setup_intent.succeeded",
        "created": int(time.time()),
        "data": {"object": confirmed.to_dict()},
    }
    payload = json.dumps(event).encode()

    parsed = provider.parse_webhook(payload, {"Stripe-Signature": sign(payload)})

    assert parsed.intent is None
    assert parsed.setup_intent is not None
    assert (parsed.setup_intent.id, parsed.setup_intent.status) == (setup.id, "succeeded")
    assert (parsed.setup_intent.customer_id, parsed.setup_intent.payment_method_id) == (customer, card)
    assert parsed.setup_intent.metadata == {"org_id": ORG}


# -- Checkout and the billing portal (recorded responses) ---------------------------------------


async def test_checkout_session_for_a_top_up(
    provider: StripeProvider, recording_http: RecordedStripeHTTPClient
) -> None:
    customer = await new_customer(provider)

    session = await provider.create_checkout_session(
        customer_id=customer,
        amount_cents=2500,
        currency="USD",
        success_url="https://app.example.com/billing?checkout=success",
        cancel_url="https://app.example.com/billing?checkout=canceled",
        price_ids=[],
        metadata={"org_id": ORG},
    )

    assert session.id.startswith("cs_test_")
    assert session.url.startswith(f"https://checkout.stripe.com/c/pay/{session.id}")
    (sent,) = recording_http.requests_to("/v1/checkout/sessions")
    assert sent.params == {
        "customer": customer,
        "mode": "payment",
        "success_url": "https://app.example.com/billing?checkout=success",
        "cancel_url": "https://app.example.com/billing?checkout=canceled",
        "client_reference_id": ORG,
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "2500",
        "line_items[0][price_data][product_data][name]": "Account credit",
        "line_items[0][quantity]": "1",
        "metadata[org_id]": ORG,
        "metadata[purpose]": "checkout",
        "payment_intent_data[metadata][org_id]": ORG,
        "payment_intent_data[metadata][purpose]": "checkout",
    }


async def test_checkout_session_for_prices_is_a_subscription(
    provider: StripeProvider, recording_http: RecordedStripeHTTPClient
) -> None:
    session = await provider.create_checkout_session(
        customer_id="cus_RGx7Lk2pQm9Vn4",
        amount_cents=None,
        currency="usd",
        success_url="https://app.example.com/ok",
        cancel_url="https://app.example.com/back",
        price_ids=["price_1QNyK1LkdIwHu7ixPro", "price_1QNyK1LkdIwHu7ixSeats"],
        metadata={"org_id": ORG},
    )

    assert session.url.startswith("https://checkout.stripe.com/c/pay/cs_test_")
    (sent,) = recording_http.requests_to("/v1/checkout/sessions")
    assert sent.params["mode"] == "subscription"
    assert sent.params["line_items[0][price]"] == "price_1QNyK1LkdIwHu7ixPro"
    assert sent.params["line_items[1][price]"] == "price_1QNyK1LkdIwHu7ixSeats"
    assert sent.params["subscription_data[metadata][purpose]"] == "checkout"
    assert not any(
        key.startswith(("payment_intent_data", "line_items[0][price_data]")) for key in sent.params
    )


async def test_checkout_session_needs_an_amount_or_prices(
    provider: StripeProvider, recording_http: RecordedStripeHTTPClient
) -> None:
    with pytest.raises(ProviderError):
        await provider.create_checkout_session(
            customer_id="cus_RGx7Lk2pQm9Vn4",
            amount_cents=None,
            currency="usd",
            success_url="https://app.example.com/ok",
            cancel_url="https://app.example.com/back",
            price_ids=[],
            metadata={},
        )
    assert not recording_http.requests_to("/v1/checkout/sessions")


async def test_billing_portal_session(
    provider: StripeProvider, recording_http: RecordedStripeHTTPClient
) -> None:
    session = await provider.create_portal_session(
        customer_id="cus_RGx7Lk2pQm9Vn4", return_url="https://app.example.com/billing"
    )

    assert session.id.startswith("bps_")
    assert session.url.startswith("https://billing.stripe.com/p/session/")
    (sent,) = recording_http.requests_to("/v1/billing_portal/sessions")
    assert sent.params == {"customer": "cus_RGx7Lk2pQm9Vn4", "return_url": "https://app.example.com/billing"}


# -- the plugin: config section and provider hook ----------------------------------------------

KEYS = {"secret_key": "sk_test_x", "webhook_secret": "whsec_x"}


@pytest.mark.parametrize(
    ("section", "path", "words"),
    [
        ({"enabled": True}, "plugins.stripe", "STRIPE_SECRET_KEY"),
        ({"enabled": True, "secret_key": "sk_test_x"}, "plugins.stripe", "webhook_secret"),
        ({"enabled": True, **KEYS, "timeout_seconds": 0}, "plugins.stripe", "timeout_seconds"),
        ({"secret_key": "sk_test_x", "secrte_key": "x"}, "plugins.stripe.secrte_key", "unknown field"),
    ],
)
def test_invalid_stripe_config_is_refused(
    make_state: Callable[..., Billfold], section: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_state({"plugins": {"stripe": section}})
    assert caught.value.key_path == path
    assert words in caught.value.message
    assert caught.value.line is not None


async def test_enabled_stripe_is_the_provider(make_state: Callable[..., Billfold]) -> None:
    state = make_state({"plugins": {"stripe": {"enabled": True, **KEYS, "publishable_key": "pk_test_x"}}})
    try:
        assert type(state.pm.get_plugin("stripe")).__name__ == "module"  # loaded from the entry point
        assert isinstance(state.provider, StripeProvider)
        assert state.provider.name == "stripe"
    finally:
        await state.close()


async def test_disabled_stripe_leaves_the_local_provider(make_state: Callable[..., Billfold]) -> None:
    for overrides in ({}, {"plugins": {"stripe": {"enabled": False, "secret_key": "sk_test_x"}}}):
        state = make_state(overrides)
        try:
            assert state.plugin_config("stripe").enabled is False
            try:
                provider = state.provider
            except RuntimeError:
                pytest.skip("the built-in local provider (billfold.payments.local) is not written yet")
            assert provider.name == "local"
        finally:
            await state.close()
