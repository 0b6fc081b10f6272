"""Billfold over HTTP with the Stripe plugin enabled, against localstripe (started by the tests on
127.0.0.1): top-ups, 3-D Secure, declines, saved methods, auto-reload and webhooks that localstripe
delivers to a Billfold served by uvicorn on 127.0.0.1."""

# Fixtures imported from stripe_support are requested by parameter name, which pyflakes reads
# as a redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import stripe
import uvicorn
from sqlalchemy import text

from billfold.api.app import Billfold, create_app
from billfold_stripe.provider import StripeProvider
from conftest import assert_error, minor_balance, verify
from stripe_support import (
    CARD_3DS,
    CARD_DECLINED_AT_CHARGE,
    CARD_OK,
    SECRET_KEY,
    WEBHOOK_SECRET,
    LocalStripe,
    RecordedStripeHTTPClient,
    WebhookReceiver,
    localstripe,  # noqa: F401  (fixture)
    recorded,
    sign,
    webhook_receiver,  # noqa: F401  (fixture)
)

pytestmark = [
    pytest.mark.stripe,
    # stripe.HTTPXClient passes its form body as `data=`; httpx 0.28 prefers `content=`.
    pytest.mark.filterwarnings("ignore:Use .content=:DeprecationWarning"),
]


@pytest.fixture
def config_overrides(localstripe: LocalStripe) -> dict[str, Any]:
    return {
        "plugins": {
            "stripe": {
                "enabled": True,
                "secret_key": SECRET_KEY,
                "webhook_secret": WEBHOOK_SECRET,
                "api_base": localstripe.base_url,
            }
        }
    }


@pytest.fixture
async def billfold_url(state: Billfold, client: httpx.AsyncClient) -> AsyncIterator[str]:
    """The same Billfold (same state) served by uvicorn on 127.0.0.1, for localstripe's webhooks.

    ``client`` has already run the app's lifespan for this state; this server skips its own."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(state), host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def balance(client: httpx.AsyncClient, tenant: Any) -> int:
    return int((await minor_balance(client, tenant.headers))["free"])


async def wait_for_balance(client: httpx.AsyncClient, tenant: Any, expected: int, seconds: float = 6) -> None:
    deadline = time.monotonic() + seconds
    while (current := await balance(client, tenant)) != expected:
        assert time.monotonic() < deadline, f"balance stayed {current}, expected {expected}"
        await asyncio.sleep(0.1)


async def save_default(client: httpx.AsyncClient, tenant: Any, method: str) -> dict[str, Any]:
    response = await client.post(
        "/v1/billing/default-payment-method", json={"payment_method_id": method}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def customer_of(state: Billfold, tenant: Any) -> str:
    profile = await state.profiles.get(uuid.UUID(tenant.org_id))
    assert profile.customer_id is not None
    return profile.customer_id


async def top_up(client: httpx.AsyncClient, tenant: Any, amount_cents: int, **extra: Any) -> httpx.Response:
    return await client.post(
        "/v1/billing/top-up", json={"amount_cents": amount_cents, **extra}, headers=tenant.headers
    )


# -- top-ups -----------------------------------------------------------------------------------


async def test_stripe_is_the_provider(state: Billfold, client: httpx.AsyncClient) -> None:
    assert isinstance(state.provider, StripeProvider)


async def test_top_up_with_a_saved_card_credits(
    client: httpx.AsyncClient, tenant: Any, state: Billfold, localstripe: LocalStripe
) -> None:
    card = await localstripe.card(CARD_OK)
    account = await save_default(client, tenant, card)
    assert account["has_payment_method"] is True

    response = await top_up(client, tenant, 5000)

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["credited"], body["amount_cents"]) == ("succeeded", True, 5000)
    assert await balance(client, tenant) == 5000
    intent = await localstripe.client.v1.payment_intents.retrieve_async(body["payment_intent_id"])
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 5000, "usd")
    assert intent.customer == await customer_of(state, tenant)
    assert intent.metadata.to_dict() == {"org_id": tenant.org_id, "purpose": "top_up"}
    assert await verify(state) == []


async def test_top_up_with_a_method_in_the_request(
    client: httpx.AsyncClient, tenant: Any, localstripe: LocalStripe
) -> None:
    response = await top_up(client, tenant, 1500, payment_method_id=await localstripe.card(CARD_OK))
    assert response.status_code == 201, response.text
    assert await balance(client, tenant) == 1500


async def test_decline_is_402_card_declined(
    client: httpx.AsyncClient, tenant: Any, state: Billfold, localstripe: LocalStripe
) -> None:
    await save_default(client, tenant, await localstripe.card(CARD_DECLINED_AT_CHARGE))

    response = await top_up(client, tenant, 5000)

    assert_error(response, 402, "card_declined")
    assert await balance(client, tenant) == 0
    assert await verify(state) == []


async def test_unknown_payment_method_is_400(client: httpx.AsyncClient, tenant: Any) -> None:
    response = await client.post(
        "/v1/billing/default-payment-method", json={"payment_method_id": "pm_nope"}, headers=tenant.headers
    )
    assert_error(response, 400, "invalid_payment_method")


async def test_three_d_secure_then_webhook_credits_once(
    client: httpx.AsyncClient,
    tenant: Any,
    state: Billfold,
    localstripe: LocalStripe,
    billfold_url: str,
    webhook_receiver: WebhookReceiver,
) -> None:
    await localstripe.register_webhook(f"{billfold_url}/v1/stripe/webhook", name="billfold")
    await localstripe.register_webhook(webhook_receiver.url, name="copy")
    await save_default(client, tenant, await localstripe.card(CARD_3DS))

    challenged = await top_up(client, tenant, 5000)

    body = assert_error(challenged, 402, "authentication_required")
    assert body["next_action"] == "confirm_payment"
    intent_id, client_secret = body["payment_intent_id"], body["client_secret"]
    assert client_secret.startswith(intent_id)
    assert await balance(client, tenant) == 0

    # The customer passes 3-D Secure in the browser; Stripe then reports the payment by webhook.
    assert await localstripe.authenticate(intent_id, client_secret) == "succeeded"
    await wait_for_balance(client, tenant, 5000)

    # Stripe retries deliveries: the same event again (at the other URL) credits nothing more.
    delivery = await webhook_receiver.wait_for("payment_intent.succeeded", object_id=intent_id)
    again = await client.post(
        "/v1/webhooks/stripe",
        content=delivery.payload,
        headers={"Stripe-Signature": delivery.headers["Stripe-Signature"]},
    )
    assert again.status_code == 200, again.text
    assert again.json()["idempotent"] is True
    assert await balance(client, tenant) == 5000
    assert await verify(state) == []


async def test_forged_webhook_is_refused(client: httpx.AsyncClient, tenant: Any, state: Billfold) -> None:
    event = {
        "id": "evt_forged",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": int(time.time()),
        "data": {
            "object": {
                "id": "pi_forged",
                "object": "payment_intent",
                "amount": 100000,
                "currency": "usd",
                "status": "succeeded",
                "metadata": {"org_id": tenant.org_id, "purpose": "top_up"},
            }
        },
    }
    payload = json.dumps(event).encode()
    for headers in ({"Stripe-Signature": sign(payload, "whsec_attacker")}, {}):
        response = await client.post("/v1/stripe/webhook", content=payload, headers=headers)
        assert_error(response, 400, "invalid_signature")
    assert await balance(client, tenant) == 0


# -- saved methods -----------------------------------------------------------------------------


async def test_setup_intent_then_default_payment_method(
    client: httpx.AsyncClient, tenant: Any, state: Billfold, localstripe: LocalStripe
) -> None:
    response = await client.post("/v1/billing/setup-intent", headers=tenant.headers)
    assert response.status_code == 201, response.text
    setup = response.json()
    assert setup["setup_intent_id"].startswith("seti_")
    assert setup["client_secret"]
    assert setup["status"] == "requires_payment_method"

    # The browser confirms the SetupIntent with a new card (Stripe.js).
    card = await localstripe.card(CARD_OK)
    confirmed = await localstripe.client.v1.setup_intents.confirm_async(
        setup["setup_intent_id"], {"payment_method": card}
    )
    assert confirmed.status == "succeeded"
    assert confirmed.customer == await customer_of(state, tenant)

    account = await save_default(client, tenant, card)

    assert account["has_payment_method"] is True
    customer = await localstripe.client.v1.customers.retrieve_async(await customer_of(state, tenant))
    assert customer.to_dict()["invoice_settings"]["default_payment_method"] == card
    listed = (await client.get("/v1/billing/payment-methods", headers=tenant.headers)).json()
    assert listed["default_payment_method_id"] == card
    assert [(m["id"], m["brand"], m["last4"], m["is_default"]) for m in listed["data"]] == [
        (card, "visa", "4242", True)
    ]


async def test_a_card_saved_in_the_browser_is_recorded_with_its_details_from_the_webhook(
    client: httpx.AsyncClient, tenant: Any, state: Billfold, localstripe: LocalStripe
) -> None:
    """Stripe.js confirms the SetupIntent and only the webhook tells Billfold: the method is kept
    with its brand, last4 and expiry (asked of Stripe) and becomes the default."""
    setup = (await client.post("/v1/billing/setup-intent", headers=tenant.headers)).json()
    card = await localstripe.card(CARD_OK)
    confirmed = await localstripe.client.v1.setup_intents.confirm_async(
        setup["setup_intent_id"], {"payment_method": card}
    )
    # localstripe sends no setup_intent events: sign one around its real SetupIntent
    event = {
        "id": "evt_setup_from_browser",
        "object": "event",
        "type": "setup_intent.succeeded",
        "created": int(time.time()),
        "data": {"object": confirmed.to_dict()},
    }
    payload = json.dumps(event).encode()
    delivered = await client.post(
        "/v1/stripe/webhook", content=payload, headers={"Stripe-Signature": sign(payload)}
    )
    assert delivered.status_code == 200, delivered.text

    listed = (await client.get("/v1/billing/payment-methods", headers=tenant.headers)).json()
    assert listed["default_payment_method_id"] == card
    [saved] = listed["data"]
    assert (saved["id"], saved["type"], saved["brand"], saved["last4"], saved["is_default"]) == (
        card,
        "card",
        "visa",
        "4242",
        True,
    )
    assert saved["exp_month"] and saved["exp_year"]


# -- auto-reload (off session) -----------------------------------------------------------------


async def enable_auto_reload(client: httpx.AsyncClient, tenant: Any) -> None:
    response = await client.put(
        "/v1/billing/auto-reload",
        json={"enabled": True, "trigger_threshold": 10, "reload_amount": 50},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text


async def charge(client: httpx.AsyncClient, tenant: Any, amount_cents: int) -> None:
    response = await client.post(
        "/v1/billing/charges",
        json={"amount_cents": amount_cents, "description": "sms"},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text


async def test_auto_reload_charges_the_saved_card_off_session(
    client: httpx.AsyncClient, new_tenant: Any, state: Billfold, localstripe: LocalStripe
) -> None:
    tenant = await new_tenant(balance=3000)
    await save_default(client, tenant, await localstripe.card(CARD_OK))
    await enable_auto_reload(client, tenant)
    await state.worker.load_handlers()

    await charge(client, tenant, 2500)
    assert await balance(client, tenant) == 500
    await state.worker.drain()

    assert await balance(client, tenant) == 5500
    async with state.engine.connect() as conn:
        (intent_id, status) = (
            await conn.execute(
                text("SELECT provider_payment_id, status FROM payments WHERE purpose = 'auto_reload'")
            )
        ).one()
    assert status == "succeeded"
    intent = await localstripe.client.v1.payment_intents.retrieve_async(intent_id)
    assert intent.metadata.to_dict() == {"org_id": tenant.org_id, "purpose": "auto_reload"}
    assert await verify(state) == []


async def test_auto_reload_needing_3d_secure_asks_the_customer(
    client: httpx.AsyncClient,
    new_tenant: Any,
    state: Billfold,
    localstripe: LocalStripe,
    billfold_url: str,
) -> None:
    await localstripe.register_webhook(f"{billfold_url}/v1/stripe/webhook")
    tenant = await new_tenant(balance=1200)
    await save_default(client, tenant, await localstripe.card(CARD_3DS))
    await enable_auto_reload(client, tenant)
    await state.worker.load_handlers()

    await charge(client, tenant, 500)
    await state.worker.drain()

    required = await client.get(
        f"/v1/billing/{tenant.org_id}/auto-recharge/requires-action", headers=tenant.headers
    )
    action = required.json()  # document 002: the latest unresolved challenge
    assert action["amountDecimillicents"] == 5000 * 100_000
    assert action["clientSecret"].startswith(action["stripePaymentIntentId"])
    assert await balance(client, tenant) == 700

    await localstripe.authenticate(action["stripePaymentIntentId"], action["clientSecret"])
    await wait_for_balance(client, tenant, 5700)
    cleared = await client.get(
        f"/v1/billing/{tenant.org_id}/auto-recharge/requires-action", headers=tenant.headers
    )
    assert cleared.json() is None
    assert await verify(state) == []


# -- Checkout (recorded: localstripe has no Checkout) -------------------------------------------


@pytest.fixture
def recorded_checkout(
    monkeypatch: pytest.MonkeyPatch, localstripe: LocalStripe
) -> list[RecordedStripeHTTPClient]:
    """Make the app's StripeProvider use RecordedStripeHTTPClient (Checkout and portal recorded);
    localstripe's own client, made before, is left alone."""
    created: list[RecordedStripeHTTPClient] = []

    class Recording(RecordedStripeHTTPClient):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            created.append(self)

    monkeypatch.setattr(stripe, "HTTPXClient", Recording)
    return created


async def test_checkout_then_completed_webhook_credits_once(
    recorded_checkout: list[RecordedStripeHTTPClient], client: httpx.AsyncClient, tenant: Any, state: Billfold
) -> None:
    # document 002's one-time top-up: a hosted checkout, credited when Stripe reports it paid
    response = await client.post(
        f"/v1/billing/{tenant.org_id}/top-up",
        json={
            "amountDecimillicents": 2500 * 100_000,
            "successUrl": "https://app.example.com/ok",
            "cancelUrl": "https://app.example.com/no",
        },
        headers=tenant.headers,
    )

    assert response.status_code == 200, response.text
    session = response.json()
    assert set(session) == {"id", "url"}
    assert session["url"].startswith("https://checkout.stripe.com/c/pay/cs_test_")
    (http,) = recorded_checkout
    (sent,) = http.requests_to("/v1/checkout/sessions")
    assert sent.params["line_items[0][price_data][unit_amount]"] == "2500"
    assert sent.params["metadata[org_id]"] == tenant.org_id
    assert sent.params["payment_intent_data[metadata][org_id]"] == tenant.org_id
    assert sent.params["customer"] == await customer_of(state, tenant)

    # The customer pays on Stripe's page; Stripe reports the session.
    event = recorded("event_checkout_session_completed")
    event["data"]["object"]["metadata"]["org_id"] = tenant.org_id
    payload = json.dumps(event).encode()
    for path in ("/v1/stripe/webhook", "/v1/webhooks/stripe"):
        delivered = await client.post(path, content=payload, headers={"Stripe-Signature": sign(payload)})
        assert delivered.status_code == 200, delivered.text
    assert delivered.json()["idempotent"] is True
    assert await balance(client, tenant) == 2500
    assert await verify(state) == []


async def test_billing_portal(
    recorded_checkout: list[RecordedStripeHTTPClient], client: httpx.AsyncClient, tenant: Any
) -> None:
    response = await client.post(
        "/v1/billing/portal",
        json={"organizationId": tenant.org_id, "returnUrl": "https://app.example.com/billing"},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["url"].startswith("https://billing.stripe.com/p/session/")
    (sent,) = recorded_checkout[0].requests_to("/v1/billing_portal/sessions")
    assert sent.params["return_url"] == "https://app.example.com/billing"
