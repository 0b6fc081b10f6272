"""Documents 002 and 004 in their products' own words, checked against tests/contracts/families.json
(written from shared/api-reference/CONTRACTS.md): the exact keys and types of every answer and
error of their routes, and a round trip through each family."""

from __future__ import annotations

import datetime
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from litestar import post
from litestar.di import NamedDependency
from sqlalchemy import text

from billfold import hookimpl
from billfold.api import family_004
from billfold.api.auth import OrgScope
from billfold.ledger.service import LedgerService
from billfold.plugins import create_plugin_manager
from conftest import ADMIN, open_client, verify

CONTRACTS = json.loads((Path(__file__).parent / "contracts" / "families.json").read_text())
F002, F004 = CONTRACTS["002"], CONTRACTS["004"]
DAY = 86400


def _matches(value: Any, kind: str) -> bool:
    for option in kind.split("|"):
        if option == "null" and value is None:
            return True
        if option == "string" and isinstance(value, str):
            return True
        if option == "boolean" and isinstance(value, bool):
            return True
        if option == "integer" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option == "number" and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if option == "decimillicents" and isinstance(value, int) and value % 100_000 == 0:
            return True
        if option == "array" and isinstance(value, list):
            return True
        if option == "object" and isinstance(value, dict):
            return True
        if option == "currency" and isinstance(value, str) and re.fullmatch(r"[A-Z]{3}", value):
            return True
        if option == "uuid" and isinstance(value, str):
            try:
                uuid.UUID(value)
                return True
            except ValueError:
                pass
        if option == "datetime" and isinstance(value, str):
            try:
                datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
                return True
            except ValueError:
                pass
        if option == value:  # an enumerated string
            return True
    return False


def conforms(body: Any, contract: dict[str, str]) -> None:
    assert isinstance(body, dict), body
    assert set(body) == set(contract), (sorted(body), sorted(contract))
    for key, kind in contract.items():
        assert _matches(body[key], kind), (key, body[key], kind)


async def save_card(client: Any, tenant: Any, method: str = "pm_card_visa") -> None:
    response = await client.post(
        "/v1/billing/default-payment-method", json={"payment_method_id": method}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text


async def outbox(state: Any, kind: str) -> list[dict[str, Any]]:
    async with state.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT payload FROM outbox_events WHERE type = :t ORDER BY id"), {"t": kind}
        )
        return [row[0] if isinstance(row[0], dict) else json.loads(row[0]) for row in rows]


# -- document 002 ------------------------------------------------------------------------------------


async def test_002_answers_and_errors_have_the_products_keys(client, new_tenant):
    tenant = await new_tenant(balance=5000)
    org = tenant.org_id
    await client.post("/v1/billing/holds", json={"amount_cents": 700}, headers=tenant.headers)
    get = tenant.headers

    conforms(
        (await client.get(f"/v1/organizations/{org}/billing", headers=get)).json(),
        F002["GET /v1/organizations/{organizationId}/billing"],
    )
    patched = await client.patch(
        f"/v1/organizations/{org}/billing", json={"usageCapDecimillicents": 10_000_000}, headers=get
    )
    conforms(patched.json(), F002["GET /v1/organizations/{organizationId}/billing"])
    conforms(
        (await client.get(f"/v1/billing/{org}/credits", headers=get)).json(),
        F002["GET /v1/billing/{organizationId}/credits"],
    )
    history = (await client.get(f"/v1/billing/{org}/credits/history?limit=1", headers=get)).json()
    conforms(history, F002["GET /v1/billing/{organizationId}/credits/history"])
    assert history["hasMore"] is True and history["cursor"]
    for item in (await client.get(f"/v1/billing/{org}/credits/history", headers=get)).json()["items"]:
        conforms(item, F002["credit history item"])
    none = await client.get(f"/v1/billing/{org}/auto-recharge/requires-action", headers=get)
    assert none.status_code == 200 and none.json() is None
    urls = {"successUrl": "https://app.example/ok", "cancelUrl": "https://app.example/no"}
    for path, body in (
        ("/v1/billing/checkout", {"organizationId": org, "subscriptionPlan": "starter", **urls}),
        ("/v1/billing/portal", {"organizationId": org, "returnUrl": "https://app.example"}),
        (f"/v1/billing/{org}/top-up", {"amountDecimillicents": 2000 * 100_000, **urls}),
    ):
        response = await client.post(path, json=body, headers=get)
        assert response.status_code == 200, (path, response.text)
        conforms(response.json(), F002[f"POST {path.replace(org, '{organizationId}')}"])

    # errors: the product's tagged errors, and its decode error
    errors = [
        await client.get(f"/v1/billing/{uuid.uuid4()}/credits", headers=get),  # Forbidden
        await client.get(f"/v1/billing/{org}/credits"),  # Unauthorized
        await client.post(
            "/v1/billing/checkout",
            json={**urls, "organizationId": org, "subscriptionPlan": "gold"},
            headers=get,
        ),  # NotFound: no such plan
    ]
    assert [e.status_code for e in errors] == [403, 401, 404]
    assert [e.json()["_tag"] for e in errors] == ["Forbidden", "Unauthorized", "NotFound"]
    for error in errors:
        conforms(error.json(), F002["error"])
        assert error.headers["X-Tracking-Id"] == error.json()["trackingId"]
    undecodable = [
        await client.patch(
            f"/v1/organizations/{org}/billing", json={"usageCapDecimillicents": 150_000}, headers=get
        ),
        await client.post(
            f"/v1/billing/{org}/top-up", json={"amountDecimillicents": "lots", **urls}, headers=get
        ),
        await client.get(f"/v1/billing/{org}/credits/history?cursor=12", headers=get),
    ]
    for error in undecodable:
        assert error.status_code == 400, error.text
        conforms(error.json(), F002["decode error"])
    assert undecodable[0].json()["issues"][0]["path"] == ["usageCapDecimillicents"]


async def test_002_hosted_top_up_completes_locally_and_credits_once(client, state, new_tenant):
    tenant = await new_tenant()
    org = tenant.org_id
    before = (await client.get(f"/v1/organizations/{org}/billing", headers=tenant.headers)).json()
    session = (
        await client.post(
            f"/v1/billing/{org}/top-up",
            json={
                "amountDecimillicents": 2500 * 100_000,
                "successUrl": "https://app.example/ok",
                "cancelUrl": "https://app.example/no",
            },
            headers=tenant.headers,
        )
    ).json()
    assert session["url"].startswith("https://app.example/ok?session_id=")
    not_yet = (await client.get(f"/v1/billing/{org}/credits", headers=tenant.headers)).json()
    assert not_yet["creditsBalanceDecimillicents"] == before["creditsBalanceDecimillicents"]  # paid later

    completed = await client.post(
        f"/v1/billing/{org}/dev/complete-local", json={"sessionId": session["id"]}, headers=tenant.headers
    )
    assert completed.status_code == 200, completed.text
    conforms(completed.json(), F002["GET /v1/organizations/{organizationId}/billing"])
    assert (
        completed.json()["creditsBalanceDecimillicents"]
        == before["creditsBalanceDecimillicents"] + 2500 * 100_000
    )
    again = await client.post(
        f"/v1/billing/{org}/dev/complete-local", json={"sessionId": session["id"]}, headers=tenant.headers
    )
    assert again.status_code == 404 and again.json()["_tag"] == "NotFound"
    credits = (await client.get(f"/v1/billing/{org}/credits", headers=tenant.headers)).json()
    assert credits["creditsBalanceDecimillicents"] == 2500 * 100_000  # once
    history = (await client.get(f"/v1/billing/{org}/credits/history", headers=tenant.headers)).json()
    purchase = history["items"][0]
    assert (purchase["entryType"], purchase["amountDecimillicents"]) == ("purchase", 2500 * 100_000)
    assert await verify(state) == []


async def test_002_complete_local_is_refused_outside_development(make_state):
    from billfold.payments.local import LocalProvider

    class Elsewhere(LocalProvider):
        name = "elsewhere"

    class Plugin:
        @hookimpl(tryfirst=True)
        def billfold_payment_provider(self) -> LocalProvider:
            return Elsewhere()

    pm = create_plugin_manager()
    pm.register(Plugin(), name="elsewhere")
    state = make_state({"environment": "production"}, pm=pm)
    async with open_client(state) as client:
        created = (await client.post("/v1/admin/organizations", json={"name": "Prod"}, headers=ADMIN)).json()
        response = await client.post(
            f"/v1/billing/{created['id']}/dev/complete-local",
            headers={"Authorization": f"Bearer {created['api_key']}"},
        )
        assert response.status_code == 403
        assert response.json()["_tag"] == "Forbidden"


# -- document 004 ------------------------------------------------------------------------------------


class Send004:
    """A route of the 004 family that spends money, to see its 402 (sends arrive with usage)."""

    @hookimpl
    def billfold_routes(self) -> list[Any]:
        @post("/v1/test/sends", opt=family_004.OPT, status_code=201)
        async def send(
            org: NamedDependency[OrgScope], ledger: NamedDependency[LedgerService]
        ) -> dict[str, int]:
            posted = await ledger.charge(org.org_id, 1234, description="send")
            return {"entry": posted.entry.id}

        return [send]


async def test_004_answers_and_errors_have_the_products_keys(make_state):
    pm = create_plugin_manager()
    pm.register(Send004(), name="send-004")
    state = make_state({"portal": {"topup_url": "https://app.example/top-up"}}, pm=pm)
    async with open_client(state) as client:
        created = (
            await client.post(
                "/v1/admin/organizations", json={"name": "EU", "currency": "eur"}, headers=ADMIN
            )
        ).json()
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        conforms(
            (await client.get("/v1/billing/balance", headers=headers)).json(), F004["GET /v1/billing/balance"]
        )
        await client.post(
            "/v1/billing/payment-methods", json={"payment_method_id": "pm_card_visa"}, headers=headers
        )
        await client.post(
            "/v1/billing/payment-methods", json={"payment_method_id": "pm_sepa_debit"}, headers=headers
        )
        methods = (await client.get("/v1/billing/payment-methods", headers=headers)).json()
        conforms(methods, F004["GET /v1/billing/payment-methods"])
        for method in methods["data"]:
            conforms(method, F004["payment method"])
        assert [m["type"] for m in methods["data"]] == ["card", "sepa_debit"]
        topped = await client.post(
            "/v1/billing/topup",
            json={"amount": 10.0, "currency": "EUR", "payment_method_id": "pm_card_visa"},
            headers=headers,
        )
        assert topped.status_code == 201, topped.text
        conforms(topped.json(), F004["POST /v1/billing/topup"])
        conforms(topped.json()["balance"], F004["GET /v1/billing/balance"])
        conforms(
            (await client.get("/v1/billing/auto-reload", headers=headers)).json(),
            F004["GET /v1/billing/auto-reload"],
        )

        # errors: {error, message, details}; a send short of money: the 402 with what is missing
        refused = await client.post(
            "/v1/billing/topup", json={"amount": 5, "currency": "EUR"}, headers=headers
        )
        conforms(refused.json(), F004["error"])
        assert refused.json()["error"] == "invalid_amount" and refused.json()["details"] == [
            {"field": "amount"}
        ]
        conforms((await client.get("/v1/billing/balance")).json(), F004["error"])
        short = await client.post("/v1/test/sends", headers=headers)
        assert short.status_code == 402
        assert short.json() == {
            "error": "insufficient_balance",
            "message": short.json()["message"],
            "balance": 10.0,
            "required_amount": 12.34,
            "topup_url": "https://app.example/top-up",
            "trackingId": short.json()["trackingId"],
        }
        conforms(short.json(), F004["402 insufficient balance"])


async def test_004_round_trip_top_up_and_auto_reload_rules(client, state, new_tenant):
    tenant = await new_tenant(currency="eur")
    await save_card(client, tenant)
    topped = await client.post(
        "/v1/billing/topup", json={"amount": 10.00, "currency": "EUR"}, headers=tenant.headers
    )
    assert topped.status_code == 201, topped.text
    assert (await client.get("/v1/billing/balance", headers=tenant.headers)).json() == {
        "free": 10.0,
        "reserved": 0.0,
        "total": 10.0,
        "currency": "EUR",
    }
    configured = await client.put(
        "/v1/billing/auto-reload",
        json={"enabled": True, "trigger_threshold": 9.5, "reload_amount": 10},
        headers=tenant.headers,
    )
    assert configured.json() == {
        "enabled": True,
        "trigger_threshold": 9.5,
        "reload_amount": 10.0,
        "monthly_limit": None,
        "currency": "EUR",
    }
    await state.worker.load_handlers()
    # a stream of debits, each taking the balance under the threshold again: at most 3 reloads a day
    answers = []
    for _ in range(6):
        charged = await client.post(
            "/v1/billing/charges", json={"amount_cents": 1000}, headers=tenant.headers
        )
        answers.append(charged.status_code)
        await state.worker.drain()
    assert answers == [201, 201, 201, 201, 402, 402]  # the fourth emptied it: no fourth reload today
    async with state.engine.connect() as conn:
        reloads = (
            await conn.execute(text("SELECT count(*) FROM payments WHERE purpose = 'auto_reload'"))
        ).scalar_one()
    assert reloads == 3
    assert [e["period"] for e in await outbox(state, "auto_reload.limit_reached")][-1] == "day"
    # the next business day, reloading works again
    await client.post("/v1/admin/clock", json={"seconds": DAY}, headers=ADMIN)
    await client.post("/v1/billing/topup", json={"amount": 10, "currency": "EUR"}, headers=tenant.headers)
    await client.post("/v1/billing/charges", json={"amount_cents": 1000}, headers=tenant.headers)
    await state.worker.drain()
    assert (await client.get("/v1/billing/balance", headers=tenant.headers)).json()["free"] == 10.0
    async with state.engine.connect() as conn:
        reloads = (
            await conn.execute(text("SELECT count(*) FROM payments WHERE purpose = 'auto_reload'"))
        ).scalar_one()
    assert reloads == 4
    assert await verify(state) == []


async def test_004_a_declined_reload_is_retried_once_after_24_hours_then_the_tenant_is_told(
    client, state, new_tenant
):
    tenant = await new_tenant(currency="eur", balance=1500)
    await save_card(client, tenant, "pm_card_chargeDeclined")
    await client.put(
        "/v1/billing/auto-reload",
        json={"enabled": True, "trigger_threshold": 10, "reload_amount": 20},
        headers=tenant.headers,
    )
    await state.worker.load_handlers()
    await client.post("/v1/billing/charges", json={"amount_cents": 600}, headers=tenant.headers)
    await state.worker.drain()
    assert len(await outbox(state, "auto_reload.failed")) == 1
    scheduled = await outbox(state, "auto_reload.retry_scheduled")
    assert len(scheduled) == 1

    # not before 24 h of business time
    await client.post("/v1/admin/clock", json={"seconds": 23 * 3600}, headers=ADMIN)
    assert await state.autoreload.retry_due() == 0
    await client.post("/v1/admin/clock", json={"seconds": 3600 + 1}, headers=ADMIN)
    await state.worker.run_tasks_once()  # the worker's periodic task
    await state.worker.drain()
    assert len(await outbox(state, "auto_reload.failed")) == 2
    told = await outbox(state, "auto_reload.retry_failed")
    assert len(told) == 1 and told[0]["next_action"] == "update_payment_method"
    # once: no further retry is scheduled
    await client.post("/v1/admin/clock", json={"seconds": 2 * DAY}, headers=ADMIN)
    assert await state.autoreload.retry_due() == 0
    assert len(await outbox(state, "auto_reload.retry_scheduled")) == 1
    assert await verify(state) == []


@pytest.mark.parametrize("shape", ["002", "004"])
async def test_the_webhook_answers_in_002s_words(client, shape):
    """Both documented webhook paths are one handler and answer {processed, idempotent, eventId}
    (here refused: the local provider receives no webhooks)."""
    path = "/v1/webhooks/stripe" if shape == "002" else "/v1/stripe/webhook"
    response = await client.post(path, content=b"{}", headers={"content-type": "application/json"})
    assert response.status_code == 400


async def test_the_usage_routes_answer_in_each_familys_words(client, new_tenant):
    """002's usage report and no-cap reminder; 004's month and detailed reports, a send's inline
    billing and its 402 — key sets and types from the fixture, errors in each family's envelope."""
    tenant = await new_tenant(balance=1000, currency="eur")
    org, headers = tenant.org_id, tenant.headers
    sent = await client.post(
        "/v1/usage",
        json={"channel": "sms", "quantity": 3, "event_id": "c-1", "category": "api_call"},
        headers={**headers, "Billfold-Shape": "004"},
    )
    assert sent.status_code == 201, sent.text
    conforms(sent.json()["billing"], F004["send billing"])
    conforms(sent.json()["billing"]["balance"], F004["send balance"])
    short = await client.post(
        "/v1/usage",
        json={"channel": "call", "quantity": 99_999, "event_id": "c-2"},
        headers={**headers, "Billfold-Shape": "004"},
    )
    assert short.status_code == 402
    conforms(short.json(), F004["402 insufficient balance"])

    month = (await client.get("/v1/billing/usage", headers=headers)).json()
    conforms(month, F004["GET /v1/billing/usage"])
    for channel in month["channels"]:
        conforms(channel, F004["channel usage"])
    detailed = (await client.get("/v1/billing/usage/detailed?group_by=category", headers=headers)).json()
    conforms(detailed, F004["GET /v1/billing/usage/detailed"])
    assert [row["key"] for row in detailed["rows"]] == ["api_call"]
    for row in detailed["rows"]:
        conforms(row, F004["usage row"])
    bad_month = await client.get("/v1/billing/usage?month=2026-13", headers=headers)
    assert bad_month.status_code == 400
    conforms(bad_month.json(), F004["error"])

    report = await client.get(f"/v1/organizations/{org}/usage?category=api_call", headers=headers)
    conforms(report.json(), F002["GET /v1/organizations/{organizationId}/usage"])
    assert (
        report.json()["totalQuantity"] == 3 and report.json()["totalCostDecimillicents"] == 200_000
    )  # round(2.37)
    reminder = f"/v1/billing/{org}/no-cap-reminder"
    conforms(
        (await client.get(reminder, headers=headers)).json(),
        F002["GET /v1/billing/{organizationId}/no-cap-reminder"],
    )
    assert (await client.get(reminder, headers=headers)).json() == {"dismissed": False, "usageCapSet": False}
    for _ in range(2):  # idempotent
        dismissed = await client.post(f"{reminder}/dismiss", headers=headers)
        assert dismissed.json() == {"dismissed": True, "usageCapSet": False}
    errors = [
        await client.get(f"/v1/organizations/{org}/usage", headers=headers),  # no category
        await client.get(
            f"/v1/organizations/{org}/usage?category=api_call&periodStart=yesterday", headers=headers
        ),
        await client.get(f"/v1/organizations/{uuid.uuid4()}/usage?category=api_call", headers=headers),
    ]
    assert [e.status_code for e in errors] == [400, 400, 403]
    for error in errors:
        conforms(error.json(), F002["error"] if "issues" not in error.json() else F002["decode error"])
