"""Priced usage through HTTP, on SQLite and on PostgreSQL: prices from billing.yaml (the shipped
config: call 8 cents a started minute, sms 0.79 cents, rcs message types), the carried fraction,
event_id idempotency, two-phase sends, session and subscriber-month units, plans and caps, cycles
on the business clock, and the reports."""

from __future__ import annotations

import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from billfold import clock
from billfold.errors import ValidationFailed
from conftest import ADMIN, assert_error, count_rows, minor_balance, verify

DAY = 86400


def event(n: int | str, channel: str = "sms", quantity: int = 1, **extra: Any) -> dict[str, Any]:
    return {"channel": channel, "quantity": quantity, "event_id": f"evt-{n}", **extra}


async def report(client, tenant, body: dict[str, Any], **headers: str):
    return await client.post("/v1/usage", json=body, headers={**tenant.headers, **headers})


async def set_plan(client, tenant, **fields: Any) -> dict[str, Any]:
    response = await client.put(f"/v1/admin/organizations/{tenant.org_id}/plan", json=fields, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_calls_are_billed_per_started_minute(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    short = await report(client, tenant, event(1, "call", 54))
    assert short.status_code == 201, short.text
    billing = short.json()["billing"]
    assert (billing["quantity"], billing["billed_quantity"], billing["unit_price"]) == (54, 1, "8")
    assert billing["amount_cents"] == 8
    assert short.json()["entry"]["amount_cents"] == -8

    long = (await report(client, tenant, event(2, "call", 121))).json()
    assert (long["billing"]["billed_quantity"], long["billing"]["amount_cents"]) == (3, 24)
    nothing = (await report(client, tenant, event(3, "call", 0))).json()
    assert (nothing["billing"]["billed_quantity"], nothing["billing"]["amount_cents"], nothing["entry"]) == (
        0,
        0,
        None,
    )

    assert (await minor_balance(client, tenant.headers))["free"] == 1000 - 8 - 24
    # A call tier of documents 000/001 is a message type with its own price.
    pro = (await report(client, tenant, event(4, "call", 60, message_type="pro"))).json()
    assert (pro["billing"]["unit_price"], pro["billing"]["amount_cents"]) == ("12", 12)
    assert await verify(state) == []


async def test_a_thousand_sms_at_079_cost_790_with_every_charge_whole(client, new_tenant, state):
    tenant = await new_tenant(balance=100_000)
    events = [event(i) for i in range(1000)]
    response = await client.post("/v1/usage/batch", json={"events": events}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted"] * 1000
    charged = 0
    for n, result in enumerate(results, start=1):
        amount = result["billing"]["amount_cents"]
        assert isinstance(amount, int) and amount in (0, 1)
        charged += amount
        # at every point in time: round(n x 0.79), never drifting
        assert charged == int((Decimal("0.79") * n).to_integral_value(rounding=ROUND_HALF_UP))
    assert charged == 790
    assert (await minor_balance(client, tenant.headers))["free"] == 100_000 - 790
    # One event more, reported alone, continues the same carry.
    one = (await report(client, tenant, event(1000))).json()
    assert one["billing"]["amount_cents"] == 1  # round(1001 x 0.79) = 791
    assert await verify(state) == []


async def test_a_repeated_event_id_debits_once(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    first = await report(client, tenant, event("dup", "call", 60))
    again = await report(client, tenant, event("dup", "call", 60))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert (await minor_balance(client, tenant.headers))["free"] == 992
    assert await count_rows(state, "usage_events") == 1

    other = await report(client, tenant, event("dup", "call", 120))
    assert_error(other, 409, "event_id_conflict", field="event_id")
    assert (await minor_balance(client, tenant.headers))["free"] == 992


async def test_a_refused_event_is_not_stored_and_a_retry_runs_again(client, new_tenant, state):
    tenant = await new_tenant(balance=5)
    refused = await report(client, tenant, event("late", "call", 60))
    body = assert_error(refused, 402, "insufficient_funds")
    assert body["required_cents"] == 8
    assert await count_rows(state, "usage_events") == 0
    assert await count_rows(state, "usage_carry") == 0
    await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": 100, "description": "top up"},
        headers=ADMIN,
    )
    retried = await report(client, tenant, event("late", "call", 60))
    assert retried.status_code == 201, retried.text
    assert (await minor_balance(client, tenant.headers))["free"] == 97


async def test_reserve_then_delivered_captures_and_failed_releases(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    held = (await report(client, tenant, event("r1", "call", 120, reserve=True))).json()
    assert held["status"] == "reserved" and held["entry"]["kind"] == "hold"
    assert held["billing"]["amount_cents"] == 16
    assert held["billing"]["balance"] == {"free": 984, "reserved": 16, "total": 1000}

    settle = f"/v1/usage/{held['usage_id']}/settle"
    assert_error(
        await client.post(settle, json={"outcome": "delivered", "quantity": 121}, headers=tenant.headers),
        400,
        "quantity_exceeds_reserved",
        field="quantity",
    )
    delivered = await client.post(
        settle, json={"outcome": "delivered", "quantity": 61}, headers=tenant.headers
    )
    assert delivered.status_code == 200, delivered.text
    body = delivered.json()
    assert body["status"] == "delivered" and body["billing"]["amount_cents"] == 16  # 61 s = 2 minutes
    assert body["billing"]["balance"] == {"free": 984, "reserved": 0, "total": 984}
    assert_error(
        await client.post(settle, json={"outcome": "failed"}, headers=tenant.headers), 409, "usage_delivered"
    )

    partial = (await report(client, tenant, event("r2", "call", 180, reserve=True))).json()
    short = await client.post(
        f"/v1/usage/{partial['usage_id']}/settle",
        json={"outcome": "delivered", "quantity": 30},
        headers=tenant.headers,
    )
    assert short.json()["billing"]["amount_cents"] == 8  # 3 minutes held, 1 charged, 2 back
    assert (await minor_balance(client, tenant.headers)) == {
        "free": 976,
        "reserved": 0,
        "total": 976,
        "currency": "usd",
    }

    failed = (await report(client, tenant, event("r3", "sms", 3, reserve=True))).json()
    assert failed["billing"]["amount_cents"] == 3  # ceil(3 x 0.79) held
    released = await client.post(
        f"/v1/usage/{failed['usage_id']}/settle", json={"outcome": "failed"}, headers=tenant.headers
    )
    assert released.json()["status"] == "failed" and released.json()["billing"]["amount_cents"] == 0
    assert (await minor_balance(client, tenant.headers))["total"] == 976
    assert_error(
        await client.post(
            f"/v1/usage/{failed['usage_id']}/settle", json={"outcome": "failed"}, headers=tenant.headers
        ),
        409,
        "usage_failed",
    )
    report_ = await client.get("/v1/billing/usage", headers=tenant.headers)
    calls = {c["channel"]: c for c in report_.json()["channels"]}
    assert calls["call"]["quantity"] == 3 and calls["call"]["amount"] == 0.24  # failed sms not counted
    assert "sms" not in calls
    assert await verify(state) == []


async def test_another_organizations_usage_is_not_found(client, new_tenant):
    tenant = await new_tenant(balance=1000)
    other = await new_tenant(balance=1000, name="Other")
    held = (await report(client, tenant, event("x", "call", 60, reserve=True))).json()
    assert_error(
        await client.post(
            f"/v1/usage/{held['usage_id']}/settle", json={"outcome": "failed"}, headers=other.headers
        ),
        404,
        "usage_not_found",
    )
    assert_error(
        await client.get(f"/v1/usage/{held['usage_id']}", headers=other.headers), 404, "usage_not_found"
    )
    assert (await client.get(f"/v1/usage/{held['usage_id']}", headers=tenant.headers)).json()[
        "status"
    ] == "reserved"


async def test_conversation_and_mau_units_are_enforced_by_billfold(client, new_tenant):
    tenant = await new_tenant(balance=10_000)
    conversation = {"channel": "rcs", "quantity": 1, "message_type": "conversation", "session_id": "s-1"}
    first = (await report(client, tenant, {**conversation, "event_id": "c1"})).json()
    second = (await report(client, tenant, {**conversation, "event_id": "c2"})).json()
    assert (first["billing"]["amount_cents"], second["billing"]["amount_cents"]) == (3, 0)
    assert second["billing"]["billed_quantity"] == 0
    assert_error(
        await report(client, tenant, {**conversation, "event_id": "c3", "session_id": None}),
        400,
        "session_id_required",
        field="session_id",
    )

    mau = {
        "channel": "rcs",
        "quantity": 1,
        "message_type": "mau",
        "subscriber_id": "+4912345",
        "agent_id": "a",
    }
    assert (await report(client, tenant, {**mau, "event_id": "m1"})).json()["billing"]["amount_cents"] == 10
    assert (await report(client, tenant, {**mau, "event_id": "m2"})).json()["billing"]["amount_cents"] == 0
    other_agent = (await report(client, tenant, {**mau, "event_id": "m3", "agent_id": "b"})).json()
    assert other_agent["billing"]["amount_cents"] == 10

    clock.set_offset(datetime.timedelta(days=32))  # next calendar month, and the session is over
    assert (await report(client, tenant, {**mau, "event_id": "m4"})).json()["billing"]["amount_cents"] == 10
    assert (await report(client, tenant, {**conversation, "event_id": "c4"})).json()["billing"][
        "amount_cents"
    ] == 3


async def test_messages_cap_refuses_on_a_free_step_and_overage_is_counted_on_a_paid_one(client, new_tenant):
    tenant = await new_tenant(balance=10_000)
    await set_plan(client, tenant, messages_cap=3)
    for n in range(3):
        assert (await report(client, tenant, event(f"e{n}", "email"))).status_code == 201
    refused = await report(client, tenant, event("e3", "email"))
    body = assert_error(refused, 402, "messages_cap_exceeded")
    assert body["cap"] == 3 and body["used"] == 3
    # allow_overage does not apply on a free step
    await set_plan(client, tenant, allow_overage=True)
    assert_error(await report(client, tenant, event("e3", "email")), 402, "messages_cap_exceeded")
    # a paid step (an upgrade applies at once) with overage: accepted and counted
    plan = await set_plan(client, tenant, message_step="starter", messages_cap=3)
    assert plan["message_step"] == "starter"
    assert (await report(client, tenant, event("e3", "email"))).status_code == 201
    plan = (await client.get(f"/v1/admin/organizations/{tenant.org_id}/plan", headers=ADMIN)).json()
    assert plan["counters"]["messages"] == 4


async def test_cost_and_sub_caps_and_the_spend_cap(client, new_tenant):
    tenant = await new_tenant(balance=10_000)
    await set_plan(client, tenant, cost_cap=20, call_cap=16)
    assert (await report(client, tenant, event(1, "call", 120))).status_code == 201  # 16
    assert_error(await report(client, tenant, event(2, "call", 60)), 402, "call_cap_exceeded")
    assert (await report(client, tenant, event(3, "sms", 5))).status_code == 201  # 4 -> cost 20
    assert_error(await report(client, tenant, event(4, "sms", 1)), 402, "cost_cap_exceeded")

    capped = await new_tenant(balance=10_000, name="Capped")
    path = f"/v1/organizations/{capped.org_id}/billing"
    patched = await client.patch(path, json={"usageCapDecimillicents": 1_000_000}, headers=capped.headers)
    assert patched.status_code == 200, patched.text  # 10 cents
    assert (await report(client, capped, event(1, "call", 60))).status_code == 201
    assert_error(await report(client, capped, event(2, "call", 60)), 402, "usage_cap_exceeded")
    await client.patch(path, json={"usageCapDecimillicents": 0}, headers=capped.headers)
    assert_error(await report(client, capped, event(3, "push")), 402, "usage_cap_exceeded")  # 0 refuses all


async def test_blocked_and_unverified_organizations(client, new_tenant):
    tenant = await new_tenant(balance=10_000)
    status = f"/v1/admin/organizations/{tenant.org_id}/status"
    await client.put(status, json={"status": "blocked"}, headers=ADMIN)
    assert_error(await report(client, tenant, event(1, "email")), 402, "account_blocked")
    await client.put(status, json={"status": "unverified"}, headers=ADMIN)
    for n in range(50):  # the shipped config: 50 sms a cycle while unverified
        assert (await report(client, tenant, event(f"u{n}"))).status_code == 201
    assert_error(await report(client, tenant, event("u50")), 402, "unverified_cap_exceeded")
    assert (await report(client, tenant, event("mail", "email"))).status_code == 201  # no internal cap


async def test_the_cycle_resets_on_the_anniversary_and_a_downgrade_waits_for_it(client, new_tenant):
    tenant = await new_tenant(balance=10_000)
    today = clock.now().date()
    plan = await set_plan(
        client, tenant, message_step="starter", messages_cap=2, anniversary=today.isoformat()
    )
    assert plan["cycle_start"] == today.isoformat()
    for n in range(2):
        assert (await report(client, tenant, event(n, "email"))).status_code == 201
    assert_error(await report(client, tenant, event(2, "email")), 402, "messages_cap_exceeded")

    downgraded = await set_plan(client, tenant, message_step="free")
    assert downgraded["message_step"] == "starter"
    assert downgraded["pending_message_step"] == "free"
    assert downgraded["pending_effective"] == downgraded["cycle_end"]

    clock.set_offset(datetime.timedelta(days=31))  # past the next anniversary
    plan = (await client.get(f"/v1/admin/organizations/{tenant.org_id}/plan", headers=ADMIN)).json()
    assert plan["message_step"] == "free" and plan["pending_message_step"] is None
    assert plan["cycle_start"] == downgraded["cycle_end"]
    assert plan["counters"] == {}
    assert (await report(client, tenant, event(2, "email"))).status_code == 201  # counters restarted


async def test_cap_warnings_are_domain_events_once_per_cycle(client, new_tenant, state):
    from sqlalchemy import text

    tenant = await new_tenant(balance=10_000)
    await set_plan(client, tenant, messages_cap=20)
    for n in range(20):
        await report(client, tenant, event(n, "email"))
    async with state.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT type, payload FROM outbox_events WHERE type LIKE 'usage.cap%' ORDER BY id")
            )
        ).all()
    import json

    seen = [(r[0], (r[1] if isinstance(r[1], dict) else json.loads(r[1]))["percentage"]) for r in rows]
    assert seen == [("usage.cap_warning", 80), ("usage.cap_warning", 95), ("usage.cap_exceeded", 100)]


async def test_unknown_channel_and_message_type_are_400_and_change_nothing(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    assert_error(await report(client, tenant, event(1, "fax")), 400, "unknown_channel", field="channel")
    assert_error(
        await report(client, tenant, event(2, "rcs", message_type="video")),
        400,
        "unknown_message_type",
        field="message_type",
    )
    assert_error(await report(client, tenant, event(3, quantity=-1)), 400, field="quantity")
    assert_error(await report(client, tenant, event(4, quantity=10**12)), 400, field="quantity")
    assert_error(await report(client, tenant, {**event(5), "quantity": "1"}), 400, field="quantity")
    assert await count_rows(state, "usage_events") == 0
    assert (await minor_balance(client, tenant.headers))["free"] == 1000


async def test_document_004_shapes_on_request(client, new_tenant):
    tenant = await new_tenant(balance=1000, currency="eur")
    sent = await report(client, tenant, event(1, "rcs", message_type="single"), **{"Billfold-Shape": "004"})
    assert sent.status_code == 201, sent.text
    billing = sent.json()["billing"]
    assert set(billing) == {"channel", "message_type", "hold_amount", "message_price", "balance", "tier"}
    assert billing["message_price"] == 0.02 and billing["hold_amount"] == 0  # ceil(1.5) after carry: 2 cents
    assert billing["balance"] == {"free": 9.98, "reserved": 0.0, "total": 9.98}

    poor = await report(client, tenant, event(2, "call", 60_000), **{"Billfold-Shape": "004"})
    assert poor.status_code == 402
    body = poor.json()
    assert body["error"] == "insufficient_balance"
    assert (body["balance"], body["required_amount"]) == (9.98, 80.0)
    assert "topup_url" in body


async def test_reports_in_each_familys_words(client, new_tenant):
    tenant = await new_tenant(balance=100_000)
    await report(client, tenant, event(1, "call", 121))
    await report(client, tenant, event(2, "sms", 10, category="text_generation"))
    await report(client, tenant, event(3, "email", 4, message_type=None))

    month = (await client.get("/v1/billing/usage", headers=tenant.headers)).json()
    today = clock.now().date()
    assert month["month"] == f"{today.year:04d}-{today.month:02d}" and month["currency"] == "USD"
    channels = {c["channel"]: c for c in month["channels"]}
    assert channels["call"] == {"channel": "call", "quantity": 3, "amount": 0.24, "tier": None}
    assert channels["sms"]["quantity"] == 10 and channels["sms"]["amount"] == 0.08

    detailed = await client.get(
        "/v1/billing/usage/detailed", params={"group_by": "day"}, headers=tenant.headers
    )
    rows = detailed.json()["rows"]
    assert rows == [{"key": today.isoformat(), "quantity": 17, "amount": 0.32}]
    too_long = await client.get(
        "/v1/billing/usage/detailed",
        params={"from": "2026-01-01", "to": "2027-06-01"},
        headers=tenant.headers,
    )
    assert_error(too_long, 400, "validation_error", field="to")

    path = f"/v1/organizations/{tenant.org_id}/usage"
    by_category = (
        await client.get(path, params={"category": "text_generation"}, headers=tenant.headers)
    ).json()
    assert by_category["totalQuantity"] == 10 and by_category["totalCostDecimillicents"] == 8 * 100_000
    by_channel = (await client.get(path, params={"category": "call"}, headers=tenant.headers)).json()
    assert by_channel["totalQuantity"] == 121 and by_channel["totalCostDecimillicents"] == 24 * 100_000
    assert_error(
        await client.get(path, params={"category": "nope"}, headers=tenant.headers), 400, field="category"
    )
    assert_error(
        await client.get(
            path,
            params={"category": "call", "periodStart": "2026-01-01", "periodEnd": "2026-06-01"},
            headers=tenant.headers,
        ),
        400,
        field="periodEnd",
    )


async def test_month_close_closes_each_organization_month_once(client, new_tenant, state):
    from billfold import hookimpl

    closed: list[tuple[Any, str]] = []

    class Recorder:
        @hookimpl
        async def billfold_month_close(self, conn: Any, org_id: Any, period: str) -> None:
            closed.append((org_id, period))

    state.pm.register(Recorder(), name="close-recorder")
    first = await new_tenant()
    second = await new_tenant(name="Second")
    period = f"{clock.now().year:04d}-{clock.now().month:02d}"
    with pytest.raises(ValidationFailed, match="has not ended"):
        await state.month_close.close(period)
    clock.set_offset(datetime.timedelta(days=32))
    report_ = await state.month_close.close(period)
    assert sorted(map(str, report_.closed)) == sorted([first.org_id, second.org_id])
    again = await state.month_close.close(period)
    assert again.closed == [] and again.already == 2
    assert sorted(str(o) for o, _ in closed) == sorted([first.org_id, second.org_id])
    assert await count_rows(state, "month_closes") == 2


async def test_document_003_billing_shows_the_real_caps_and_a_paid_checkout_changes_the_steps(
    client, new_tenant, state
):
    from billfold.payments.provider import ProviderEvent

    tenant = await new_tenant(balance=1000)
    await set_plan(client, tenant, cost_cap=12345, call_cap=500)
    body = {"successUrl": "https://x/ok", "cancelUrl": "https://x/no"}
    answer = (await client.post("/billing", json=body, headers=tenant.headers)).json()
    assert (answer["messagesCap"], answer["costCap"], answer["callCap"]) == (0, 123.45, 5.0)
    assert "smsCap" not in answer  # no sms sub-cap

    unknown = await client.post(
        "/billing", json={**body, "budgetPriceId": "price_nope"}, headers=tenant.headers
    )
    assert_error(unknown, 400, "unknown_price", field="budgetPriceId")
    bought = await client.post(
        "/billing", json={**body, "messagePriceId": "price_messages_starter"}, headers=tenant.headers
    )
    assert bought.status_code == 200 and bought.json()["sessionId"]

    # The provider reports the subscription checkout paid: the step applies at once.
    paid = ProviderEvent(
        id="evt_plan_1",
        type="checkout.session.completed",
        provider="stripe",
        session_id=bought.json()["sessionId"],
        data={
            "payment_status": "paid",
            "metadata": {"org_id": tenant.org_id, "purpose": "checkout", "plan_steps": "starter"},
        },
    )
    assert await state.webhooks.handle(paid) is True
    assert await state.webhooks.handle(paid) is False  # a redelivery changes nothing
    plan = (await client.get(f"/v1/admin/organizations/{tenant.org_id}/plan", headers=ADMIN)).json()
    assert plan["message_step"] == "starter" and plan["messages_cap"] == 100000
    answer = (await client.post("/billing", json=body, headers=tenant.headers)).json()
    assert answer["messagesCap"] == 100000

    # A downgrade waits for the anniversary, and 003 shows it pending.
    await set_plan(client, tenant, message_step="free", cost_cap=None, call_cap=None)
    answer = (await client.post("/billing", json=body, headers=tenant.headers)).json()
    assert answer["messagesCap"] == 100000
    assert answer["pendingDowngradeMessagesCap"] == 0
    assert answer["pendingDowngradeAccountType"] == "free"
    assert answer["pendingDowngradeEffectiveDate"] == plan["cycle_end"]


async def test_the_worker_closes_the_month_and_releases_expired_reservations(client, new_tenant, state):
    """The worker's tasks: the month before the business clock's is closed once it ended a few
    minutes ago; a reserved send whose hold expired ends `expired` and its counters go back."""
    from sqlalchemy import text

    tenant = await new_tenant(balance=1000)
    await set_plan(client, tenant, messages_cap=5)
    held = (await report(client, tenant, event("r", "email", 2, reserve=True))).json()
    assert held["status"] == "reserved"
    async with state.engine.begin() as conn:  # its hold's timer runs out (real time)
        await conn.execute(text("UPDATE ledger_holds SET expires_at = '2000-01-01'"))
    await state.worker.load_handlers()
    await state.holds.expire_due(limit=10)
    await state.worker.run_tasks_once()
    expired = (await client.get(f"/v1/usage/{held['usage_id']}", headers=tenant.headers)).json()
    assert expired["status"] == "expired"
    plan = (await client.get(f"/v1/admin/organizations/{tenant.org_id}/plan", headers=ADMIN)).json()
    assert plan["counters"].get("messages", 0) == 0
    assert (await minor_balance(client, tenant.headers)) == {
        "free": 1000,
        "reserved": 0,
        "total": 1000,
        "currency": "usd",
    }

    period = f"{clock.now().year:04d}-{clock.now().month:02d}"
    await state.worker.run_tasks_once()
    assert await count_rows(state, "month_closes") == 0  # the month has not ended
    first_of_next = (clock.now().replace(day=28) + datetime.timedelta(days=4)).replace(
        day=1, hour=0, minute=10
    )
    clock.set_offset(first_of_next - clock.now() + clock.offset())
    await state.worker.run_tasks_once()
    async with state.engine.connect() as conn:
        periods = (await conn.execute(text("SELECT period FROM month_closes"))).scalars().all()
    assert list(periods) == [period]


async def test_a_plugin_fills_the_tier_of_the_month_report(client, new_tenant, state):
    """`billfold_usage_tier`: what a tiers plugin shows beside a channel in 004's month report."""
    from billfold import hookimpl

    asked: list[tuple[str, str]] = []

    class Tiers:
        @hookimpl
        async def billfold_usage_tier(self, conn: Any, org_id: Any, channel: str, month: str) -> Any:
            asked.append((channel, month))
            return {"channel": channel, "current": "growth", "volume_used": 2} if channel == "sms" else None

    shipped = state.pm.unregister(name="tiers")  # the installed tiers plugin answers for sms and email
    tenant = await new_tenant(balance=1000)
    await report(client, tenant, event(1, "sms", 2))
    await report(client, tenant, event(2, "email"))
    assert all(
        c["tier"] is None
        for c in (await client.get("/v1/billing/usage", headers=tenant.headers)).json()["channels"]
    )
    state.pm.register(Tiers(), name="tiers-test")
    try:
        month = (await client.get("/v1/billing/usage", headers=tenant.headers)).json()
    finally:
        state.pm.unregister(name="tiers-test")
        state.pm.register(shipped, name="tiers")
    tiers = {c["channel"]: c["tier"] for c in month["channels"]}
    assert tiers == {"sms": {"channel": "sms", "current": "growth", "volume_used": 2}, "email": None}
    assert sorted(asked) == [("email", month["month"]), ("sms", month["month"])]
