"""Payments through the built-in local provider: top-ups, saved methods, auto-reload, webhooks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy import text

from billfold import hookimpl
from billfold.payments.local import LocalProvider
from billfold.payments.provider import (
    Intent,
    InvalidWebhook,
    ProviderError,
    ProviderEvent,
    ProviderUnavailable,
)
from conftest import assert_error, count_rows, minor_balance, verify


async def balance(client: Any, tenant: Any) -> int:
    return int((await minor_balance(client, tenant.headers))["free"])


async def save_card(client: Any, tenant: Any, method: str = "pm_card_visa") -> dict[str, Any]:
    response = await client.post(
        "/v1/billing/default-payment-method", json={"payment_method_id": method}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_top_up_with_saved_card_credits_within_the_request(client, tenant, state):
    account = await save_card(client, tenant)
    assert account["has_payment_method"] is True
    response = await client.post("/v1/billing/top-up", json={"amount_cents": 5000}, headers=tenant.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["payment_intent_id"].startswith("pi_")
    assert body["client_secret"].startswith(body["payment_intent_id"] + "_secret_")
    assert await balance(client, tenant) == 5000
    transactions = (await client.get("/v1/billing/transactions", headers=tenant.headers)).json()["data"]
    assert [(t["kind"], t["amount_cents"], t["amount_usd"]) for t in transactions] == [
        ("credit", 5000, "50.00")
    ]
    assert await verify(state) == []


async def test_every_top_up_route_shares_the_rules(client, tenant):
    await save_card(client, tenant)
    routes = [f"/v1/orgs/{tenant.org_id}/billing/top-up", "/v1/billing/top-up"]
    for path in routes:
        too_small = await client.post(path, json={"amount_cents": 499}, headers=tenant.headers)
        assert too_small.status_code == 400, path
        assert too_small.json()["error"]["code"] == "invalid_amount"
        assert too_small.json()["error"]["field"] == "amount_cents"
        too_big = await client.post(path, json={"amount_cents": 1_000_001}, headers=tenant.headers)
        assert too_big.status_code == 400
        ok = await client.post(path, json={"amount_cents": 500}, headers=tenant.headers)
        assert ok.status_code == 201, ok.text
    assert await balance(client, tenant) == 1000


async def test_major_unit_top_up_in_eur_has_a_ten_euro_minimum(client, new_tenant):
    tenant = await new_tenant(currency="eur")
    await save_card(client, tenant)
    low = await client.post(
        "/v1/billing/topup", json={"amount": 9.99, "currency": "EUR"}, headers=tenant.headers
    )
    assert low.status_code == 400
    # document 004's error shape
    assert low.json() == {
        "error": "invalid_amount",
        "message": low.json()["message"],
        "details": [{"field": "amount"}],
        "trackingId": low.json()["trackingId"],
    }
    fractional = await client.post(
        "/v1/billing/topup", json={"amount": 10.001, "currency": "eur"}, headers=tenant.headers
    )
    assert fractional.status_code == 400
    wrong_currency = await client.post(
        "/v1/billing/topup", json={"amount": 20, "currency": "usd"}, headers=tenant.headers
    )
    assert wrong_currency.status_code == 400
    assert wrong_currency.json()["error"] == "currency_mismatch"
    ok = await client.post(
        "/v1/billing/topup",
        json={"amount": 10, "currency": "EUR", "payment_method_id": "pm_card_visa"},
        headers=tenant.headers,
    )
    assert ok.status_code == 201, ok.text
    assert (ok.json()["amount"], ok.json()["currency"], ok.json()["balance"]["free"]) == (10.0, "EUR", 10.0)
    assert await balance(client, tenant) == 1000


async def test_decline_and_three_d_secure(client, tenant, state):
    declined = await client.post(
        "/v1/billing/top-up",
        json={"amount_cents": 1000, "payment_method_id": "pm_card_chargeDeclined"},
        headers=tenant.headers,
    )
    assert declined.status_code == 402
    assert declined.json()["error"]["code"] == "card_declined"
    assert await balance(client, tenant) == 0

    challenged = await client.post(
        "/v1/billing/top-up",
        json={"amount_cents": 1000, "payment_method_id": "pm_card_threeDSecure2Required"},
        headers=tenant.headers,
    )
    assert challenged.status_code == 402
    body = challenged.json()
    assert body["error"]["code"] == "authentication_required"
    assert body["next_action"] == "confirm_payment"
    assert body["client_secret"].startswith(body["payment_intent_id"])
    assert await balance(client, tenant) == 0

    completed = await client.post(
        f"/v1/billing/{tenant.org_id}/dev/complete-local",
        json={"paymentIntentId": body["payment_intent_id"]},
        headers=tenant.headers,
    )
    assert completed.status_code == 200, completed.text
    assert completed.json()["creditsBalanceDecimillicents"] == 1000 * 100_000  # document 002's settings
    again = await client.post(
        f"/v1/billing/{tenant.org_id}/dev/complete-local",
        json={"paymentIntentId": body["payment_intent_id"]},
        headers=tenant.headers,
    )
    assert again.status_code == 404 and again.json()["_tag"] == "NotFound"
    assert await balance(client, tenant) == 1000
    assert await verify(state) == []


async def test_top_up_retried_with_its_idempotency_key_credits_once(client, tenant, state):
    await save_card(client, tenant)
    headers = {**tenant.headers, "Idempotency-Key": "topup-1"}
    first = await client.post("/v1/billing/top-up", json={"amount_cents": 2500}, headers=headers)
    second = await client.post("/v1/billing/top-up", json={"amount_cents": 2500}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["payment_intent_id"] == second.json()["payment_intent_id"]
    assert await balance(client, tenant) == 2500
    assert await count_rows(state, "payments") == 1


async def test_setup_intent_and_payment_methods(client, tenant):
    for path in (f"/v1/orgs/{tenant.org_id}/billing/setup-intent", "/v1/billing/setup-intent"):
        response = await client.post(path, headers=tenant.headers)
        assert response.status_code == 201, response.text
        assert response.json()["setup_intent_id"].startswith("seti_")
        assert response.json()["status"] == "requires_payment_method"
    added = await client.post(
        "/v1/billing/payment-methods", json={"payment_method_id": "pm_card_visa"}, headers=tenant.headers
    )
    assert added.status_code == 201
    assert added.json()["is_default"] is True  # the first method becomes the default
    sepa = await client.post(
        "/v1/billing/payment-methods", json={"payment_method_id": "pm_sepa_debit"}, headers=tenant.headers
    )
    assert sepa.json()["type"] == "sepa_debit"
    assert sepa.json()["is_default"] is False
    listed = (await client.get("/v1/billing/payment-methods", headers=tenant.headers)).json()
    assert [m["type"] for m in listed["data"]] == ["card", "sepa_debit"]
    assert listed["default_payment_method_id"] == "pm_card_visa"
    bad = await client.post(
        "/v1/billing/default-payment-method", json={"payment_method_id": "card_123"}, headers=tenant.headers
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "payment_method_id"


async def test_checkout_portal_and_customer_billing(client, tenant):
    checkout = await client.post(
        "/v1/billing/checkout",
        json={
            "organizationId": tenant.org_id,
            "subscriptionPlan": "starter",
            "successUrl": "https://app.example/ok",
            "cancelUrl": "https://app.example/no",
        },
        headers=tenant.headers,
    )
    assert checkout.status_code == 200, checkout.text
    assert set(checkout.json()) == {"id", "url"}
    assert checkout.json()["id"].startswith("cs_")
    portal = await client.post(
        "/v1/billing/portal",
        json={"organizationId": tenant.org_id, "returnUrl": "https://app.example"},
        headers=tenant.headers,
    )
    assert portal.status_code == 200
    assert portal.json()["url"] == "https://app.example"
    missing = await client.post("/billing", json={"successUrl": "https://x"}, headers=tenant.headers)
    assert missing.status_code == 400
    assert missing.json()["error"]["field"] == "cancelUrl"
    account = await client.post(
        "/billing",
        json={
            "successUrl": "https://x/ok",
            "cancelUrl": "https://x/no",
            "budgetPriceId": "price_budget_growth",
        },
        headers=tenant.headers,
    )
    assert account.status_code == 200, account.text
    body = account.json()
    assert body["organizationId"] == tenant.org_id
    assert body["organizationType"] == "free"
    assert body["stripeCustomerId"].startswith("cus_")
    assert body["sessionId"].startswith("cs_")
    for field in (
        "creator",
        "messagesCap",
        "costCap",
        "createdAt",
        "updatedAt",
        "anniversaryDate",
        "allowOverage",
        "name",
    ):
        assert field in body


class BrokenProvider(LocalProvider):
    name = "broken"

    async def create_payment(self, **kwargs: Any) -> Intent:
        raise ProviderUnavailable(
            "connection refused", code="provider_unavailable", provider="broken", retryable=True
        )

    async def create_checkout_session(self, **kwargs: Any) -> Any:
        raise ProviderUnavailable(
            "upstream 503", code="provider_unavailable", provider="broken", provider_code="503"
        )


class BrokenProviderPlugin:
    @hookimpl(tryfirst=True)
    def billfold_payment_provider(self, state: Any) -> BrokenProvider:
        return BrokenProvider()


async def test_provider_down_is_502_and_records_nothing_paid(client, tenant, state):
    await save_card(client, tenant)
    state.pm.register(BrokenProviderPlugin(), name="broken")
    state._provider = None
    try:
        response = await client.post(
            "/v1/billing/top-up", json={"amount_cents": 1000}, headers=tenant.headers
        )
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "provider_unavailable"
        assert response.json()["error"]["provider"] == "broken"
        failed = await client.post(
            "/billing",
            json={
                "successUrl": "https://x",
                "cancelUrl": "https://y",
                "messagePriceId": "price_messages_starter",
            },
            headers=tenant.headers,
        )
        assert failed.status_code == 502
        assert failed.json()["error"]["providerCode"] == "503"
    finally:
        state.pm.unregister(name="broken")
        state._provider = None
    assert await balance(client, tenant) == 0
    assert await count_rows(state, "payments") == 0
    retry = await client.post("/v1/billing/top-up", json={"amount_cents": 1000}, headers=tenant.headers)
    assert retry.status_code == 201
    assert await balance(client, tenant) == 1000


# -- auto-reload ------------------------------------------------------------------------------


async def enable_auto_reload(client: Any, tenant: Any, **extra: Any) -> None:
    response = await client.put(
        "/v1/billing/auto-reload",
        json={"enabled": True, "trigger_threshold": 10, "reload_amount": 50, **extra},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text


async def event_payloads(state: Any, kind: str) -> list[dict[str, Any]]:
    async with state.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT payload FROM outbox_events WHERE type = :t ORDER BY id"), {"t": kind}
        )
        return [row[0] if isinstance(row[0], dict) else json.loads(row[0]) for row in rows]


async def reload_events(state: Any, kind: str) -> int:
    async with state.engine.connect() as conn:
        return int(
            (
                await conn.execute(text("SELECT count(*) FROM outbox_events WHERE type = :t"), {"t": kind})
            ).scalar_one()
        )


async def test_auto_reload_starts_one_charge_under_concurrent_debits(client, new_tenant, state):
    tenant = await new_tenant(balance=3000)
    await save_card(client, tenant)
    await enable_auto_reload(client, tenant)
    results = await asyncio.gather(
        *[
            client.post(
                "/v1/billing/charges",
                json={"amount_cents": 100, "description": "sms"},
                headers=tenant.headers,
            )
            for _ in range(25)
        ]
    )
    assert all(r.status_code == 201 for r in results)
    assert await balance(client, tenant) == 500  # the debits never waited on the provider
    assert await reload_events(state, "auto_reload.requested") == 1
    await state.worker.load_handlers()
    await state.worker.drain()
    assert await balance(client, tenant) == 5500
    async with state.engine.connect() as conn:
        purposes = (await conn.execute(text("SELECT purpose, status FROM payments"))).all()
    assert [tuple(p) for p in purposes] == [("auto_reload", "succeeded")]
    assert await verify(state) == []


async def test_auto_reload_stops_at_the_monthly_limit(client, new_tenant, state):
    tenant = await new_tenant(balance=1500)
    await save_card(client, tenant)
    await enable_auto_reload(client, tenant, monthly_limit=50)
    await state.worker.load_handlers()
    await client.post("/v1/billing/charges", json={"amount_cents": 1000}, headers=tenant.headers)
    await state.worker.drain()
    assert await balance(client, tenant) == 5500
    await client.post("/v1/billing/charges", json={"amount_cents": 5000}, headers=tenant.headers)
    await state.worker.drain()
    assert await balance(client, tenant) == 500
    assert await reload_events(state, "auto_reload.limit_reached") == 1
    assert await count_rows(state, "payments") == 1


async def test_declined_auto_reload_is_shown_and_pauses_after_repeated_failures(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    await save_card(client, tenant, "pm_card_chargeDeclined")
    await enable_auto_reload(client, tenant)
    await state.worker.load_handlers()
    for attempt in range(1, 4):
        charged = await client.post("/v1/billing/charges", json={"amount_cents": 100}, headers=tenant.headers)
        assert charged.status_code == 201
        await state.worker.drain()
        # document 002 shows the unresolved attempt; the failure itself is a domain event
        action = (
            await client.get(
                f"/v1/billing/{tenant.org_id}/auto-recharge/requires-action", headers=tenant.headers
            )
        ).json()
        assert set(action) == {"attemptId", "amountDecimillicents", "stripePaymentIntentId", "clientSecret"}
        assert action["amountDecimillicents"] == 5000 * 100_000
        assert action["clientSecret"] is None  # a decline: nothing to confirm, the card must change
        failed = (await event_payloads(state, "auto_reload.failed"))[-1]
        assert failed["consecutive_failures"] == attempt
        assert failed["failure_code"] == "card_declined"
        assert failed["next_action"] == "update_payment_method"
    await client.post("/v1/billing/charges", json={"amount_cents": 100}, headers=tenant.headers)
    assert await reload_events(state, "auto_reload.requested") == 3  # paused: no fourth attempt
    assert await reload_events(state, "auto_reload.paused") == 1
    assert await balance(client, tenant) == 600


async def test_three_d_secure_auto_reload_asks_for_confirmation(client, new_tenant, state):
    tenant = await new_tenant(balance=1200)
    await save_card(client, tenant, "pm_card_threeDSecure2Required")
    await enable_auto_reload(client, tenant)
    await state.worker.load_handlers()
    await client.post("/v1/billing/charges", json={"amount_cents": 500}, headers=tenant.headers)
    await state.worker.drain()
    action = (
        await client.get(f"/v1/billing/{tenant.org_id}/auto-recharge/requires-action", headers=tenant.headers)
    ).json()
    assert action["clientSecret"].startswith(action["stripePaymentIntentId"])
    assert (await event_payloads(state, "auto_reload.requires_action"))[-1][
        "next_action"
    ] == "confirm_payment"
    done = await client.post(
        f"/v1/billing/{tenant.org_id}/dev/complete-local",
        json={"paymentIntentId": action["stripePaymentIntentId"]},
        headers=tenant.headers,
    )
    assert done.status_code == 200
    assert await balance(client, tenant) == 5700
    cleared = await client.get(
        f"/v1/billing/{tenant.org_id}/auto-recharge/requires-action", headers=tenant.headers
    )
    assert cleared.status_code == 200 and cleared.json() is None


# -- webhooks: exactly-once credit --------------------------------------------------------------


class WebhookLocalProvider(LocalProvider):
    """The local provider plus unsigned JSON webhooks carrying an intent (test only)."""

    name = "local"

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        if headers.get("x-test-signature") != "ok":
            raise InvalidWebhook("bad signature", code="invalid_signature", provider="local")
        data = json.loads(payload)
        intent = Intent(**data["intent"]) if "intent" in data else None
        return ProviderEvent(id=data["id"], type=data["type"], provider="local", intent=intent)


class WebhookPlugin:
    def __init__(self) -> None:
        self.provider = WebhookLocalProvider()

    @hookimpl(tryfirst=True)
    def billfold_payment_provider(self, state: Any) -> WebhookLocalProvider:
        return self.provider


@pytest.fixture
def webhook_provider(state):
    plugin = WebhookPlugin()
    state.pm.register(plugin, name="webhook-test")
    state._provider = None
    yield plugin.provider
    state.pm.unregister(name="webhook-test")
    state._provider = None


async def test_a_payment_reported_four_times_racing_is_credited_once(client, tenant, state, webhook_provider):
    await save_card(client, tenant)
    intent_key = "race-1"
    # The provider will answer the request with this intent; webhooks report the same one.
    top_up = client.post(
        "/v1/billing/top-up",
        json={"amount_cents": 7000},
        headers={**tenant.headers, "Idempotency-Key": intent_key},
    )
    first = await top_up
    assert first.status_code == 201
    pi = first.json()["payment_intent_id"]
    event = {
        "type": "payment_intent.succeeded",
        "intent": {
            "id": pi,
            "status": "succeeded",
            "amount_cents": 7000,
            "currency": "usd",
            "metadata": {"org_id": tenant.org_id, "purpose": "top_up"},
        },
    }
    headers = {"x-test-signature": "ok"}
    reports = [
        client.post("/v1/stripe/webhook", content=json.dumps({**event, "id": "evt_1"}), headers=headers),
        client.post("/v1/webhooks/stripe", content=json.dumps({**event, "id": "evt_1"}), headers=headers),
        client.post("/v1/stripe/webhook", content=json.dumps({**event, "id": "evt_2"}), headers=headers),
        client.post(
            "/v1/billing/top-up",
            json={"amount_cents": 7000},
            headers={**tenant.headers, "Idempotency-Key": intent_key},
        ),
    ]
    answers = await asyncio.gather(*reports)
    assert [a.status_code for a in answers] == [200, 200, 200, 201]
    assert sorted(a.json()["idempotent"] for a in answers[:2]) == [False, True]
    late = await client.post(
        "/v1/stripe/webhook",
        content=json.dumps({**event, "id": "evt_3", "type": "checkout.session.completed"}),
        headers=headers,
    )
    assert late.status_code == 200
    assert await balance(client, tenant) == 7000
    async with state.engine.connect() as conn:
        credits = (
            await conn.execute(text("SELECT count(*) FROM ledger_entries WHERE kind = 'credit'"))
        ).scalar_one()
    assert credits == 1
    assert await verify(state) == []


async def test_a_webhook_arriving_before_the_request_records_credits_once(
    client, tenant, state, webhook_provider
):
    event = {
        "id": "evt_early",
        "type": "payment_intent.succeeded",
        "intent": {
            "id": "pi_external_1",
            "status": "succeeded",
            "amount_cents": 1200,
            "currency": "usd",
            "metadata": {"org_id": tenant.org_id, "purpose": "checkout"},
        },
    }
    for _ in range(2):
        response = await client.post(
            "/v1/stripe/webhook", content=json.dumps(event), headers={"x-test-signature": "ok"}
        )
        assert response.status_code == 200
    failed = {**event, "id": "evt_late_failure", "type": "payment_intent.payment_failed"}
    failed["intent"] = {**event["intent"], "status": "requires_payment_method"}
    await client.post("/v1/stripe/webhook", content=json.dumps(failed), headers={"x-test-signature": "ok"})
    assert await balance(client, tenant) == 1200
    async with state.engine.connect() as conn:
        status = (await conn.execute(text("SELECT status FROM payments"))).scalar_one()
    assert status == "succeeded"  # a late failure report does not undo a succeeded payment


async def test_a_bad_signature_changes_nothing(client, tenant, state, webhook_provider):
    event = {
        "id": "evt_x",
        "type": "payment_intent.succeeded",
        "intent": {
            "id": "pi_x",
            "status": "succeeded",
            "amount_cents": 900,
            "currency": "usd",
            "metadata": {"org_id": tenant.org_id},
        },
    }
    for headers in ({"x-test-signature": "forged"}, {}):
        response = await client.post("/v1/stripe/webhook", content=json.dumps(event), headers=headers)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_signature"
    assert await balance(client, tenant) == 0
    assert await count_rows(state, "provider_events") == 0


async def test_local_provider_sends_no_webhooks(client):
    response = await client.post("/v1/stripe/webhook", content=b"{}")
    assert response.status_code == 400


class RefusingProvider(LocalProvider):
    """A provider that answers but refuses: bad credentials on payments, a rejected checkout."""

    name = "refusing"

    async def create_payment(self, **kwargs: Any) -> Intent:
        raise ProviderError(
            "Invalid API Key provided", code="provider_misconfigured", provider="refusing",
            provider_code="AuthenticationError",
        )  # fmt: skip

    async def create_checkout_session(self, **kwargs: Any) -> Any:
        raise ProviderError("No such price", code="invalid_request", provider="refusing")


class RefusingProviderPlugin:
    @hookimpl(tryfirst=True)
    def billfold_payment_provider(self, state: Any) -> RefusingProvider:
        return RefusingProvider()


async def test_a_provider_refusal_is_502_with_its_own_code_and_no_retry_advice(client, tenant, state):
    await save_card(client, tenant)
    state.pm.register(RefusingProviderPlugin(), name="refusing")
    state._provider = None
    try:
        payments_before = await count_rows(state, "payments")
        response = await client.post(
            "/v1/billing/top-up", json={"amount_cents": 1000}, headers=tenant.headers
        )
        body = assert_error(response, 502, "provider_misconfigured")
        assert body["error"]["provider"] == "refusing"
        assert body["error"]["providerCode"] == "AuthenticationError"
        assert "operator" in body["error"]["fix"] and "will not help" in body["error"]["fix"]
        assert await count_rows(state, "payments") == payments_before  # nothing recorded as paid
        assert (await minor_balance(client, tenant.headers))["free"] == 0

        refused = await client.post(
            "/billing",
            json={
                "successUrl": "https://x",
                "cancelUrl": "https://y",
                "messagePriceId": "price_messages_starter",
            },
            headers=tenant.headers,
        )
        body = assert_error(refused, 502, "invalid_request")
        assert "will not help" in body["error"]["fix"]
    finally:
        state.pm.unregister(name="refusing")
        state._provider = None


class OlderProvider(LocalProvider):
    """A provider plugin written before the contract had retrieve_payment_method."""

    name = "older"
    retrieve_payment_method = None  # type: ignore[assignment]


class OlderProviderPlugin:
    @hookimpl(tryfirst=True)
    def billfold_payment_provider(self, state: Any) -> OlderProvider:
        return OlderProvider()


async def test_method_details_come_from_the_provider_when_it_can_tell(state):
    described = await state.methods.describe("pm_card_visa")
    assert (described.brand, described.last4) == ("visa", "4242")
    state.pm.register(OlderProviderPlugin(), name="older")
    state._provider = None
    try:
        bare = await state.methods.describe("pm_card_visa")
        assert (bare.id, bare.brand, bare.last4) == ("pm_card_visa", None, None)
    finally:
        state.pm.unregister(name="older")
        state._provider = None
