"""Ledger routes over HTTP: charges (402 when short), idempotency, holds and their lifecycle,
the balance. Every scenario ends with the ledger invariants checked."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from conftest import ADMIN, assert_error, count_rows, minor_balance, verify


async def balance(client, tenant) -> dict:
    return await minor_balance(client, tenant.headers)


async def charge(client, tenant, amount: int, *, key: str | None = None, **fields):
    headers = {**tenant.headers, **({"Idempotency-Key": key} if key else {})}
    return await client.post("/v1/billing/charges", json={"amount_cents": amount, **fields}, headers=headers)


# -- balance and charges -----------------------------------------------------------------------------


async def test_new_organization_has_an_empty_balance(client, tenant, state):
    assert await balance(client, tenant) == {"free": 0, "reserved": 0, "total": 0, "currency": "usd"}
    assert await verify(state) == []


async def test_eur_organization(client, new_tenant):
    tenant = await new_tenant(currency="eur", balance=1500)
    assert await balance(client, tenant) == {"free": 1500, "reserved": 0, "total": 1500, "currency": "eur"}
    created = await client.post(
        "/v1/admin/organizations", json={"name": "X", "currency": "gbp"}, headers=ADMIN
    )
    assert_error(created, 400, "invalid_currency", field="currency")


async def test_charge_debits_and_returns_the_transaction_and_balance(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    response = await charge(
        client,
        tenant,
        16,
        description="Call billing: 2 minutes",
        call_id=987654321,
        phone_number_id=201,
        phone_number_value="+15551234567",
        metadata={"minutes": 2},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    tx = body["transaction"]
    assert tx["kind"] == "debit"
    assert tx["amount_cents"] == -16
    assert tx["amount_usd"] == "-0.16"
    assert tx["call_id"] == 987654321
    assert tx["phone_number_id"] == 201
    assert tx["phone_number_value"] == "+15551234567"
    assert tx["metadata"] == {"minutes": 2}
    assert tx["description"] == "Call billing: 2 minutes"
    assert body["balance"] == {"free": 984, "reserved": 0, "total": 984, "currency": "usd"}
    assert await balance(client, tenant) == body["balance"]
    assert await verify(state) == []


async def test_charge_of_the_whole_balance_then_one_more_cent(client, new_tenant, state):
    tenant = await new_tenant(balance=500)
    assert (await charge(client, tenant, 500)).status_code == 201
    assert (await balance(client, tenant))["free"] == 0
    assert_error(await charge(client, tenant, 1), 402, "insufficient_funds")
    assert await verify(state) == []


async def test_402_when_short_changes_nothing(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    entries_before = await count_rows(state, "ledger_entries")
    response = await charge(client, tenant, 1001, description="too much")
    body = assert_error(response, 402, "insufficient_funds")
    assert body["balance_cents"] == 1000
    assert body["required_cents"] == 1001
    assert await balance(client, tenant) == {"free": 1000, "reserved": 0, "total": 1000, "currency": "usd"}
    assert await count_rows(state, "ledger_entries") == entries_before
    assert await verify(state) == []


@pytest.mark.parametrize("amount", [0, -1])
async def test_charge_must_be_positive(client, new_tenant, amount):
    tenant = await new_tenant(balance=1000)
    assert_error(await charge(client, tenant, amount), 400, "validation_error", field="amount_cents")
    assert (await balance(client, tenant))["free"] == 1000


async def test_overage_lets_free_go_below_zero_down_to_the_limit(client, new_tenant, state):
    tenant = await new_tenant(balance=100)
    limit = await client.put(
        f"/v1/admin/organizations/{tenant.org_id}/overage", json={"overage_limit_cents": 50}, headers=ADMIN
    )
    assert limit.status_code == 200, limit.text
    assert (await charge(client, tenant, 150)).status_code == 201
    assert (await balance(client, tenant))["free"] == -50
    assert_error(await charge(client, tenant, 1), 402, "insufficient_funds")
    assert await verify(state) == []
    negative = await client.put(
        f"/v1/admin/organizations/{tenant.org_id}/overage", json={"overage_limit_cents": -1}, headers=ADMIN
    )
    assert_error(negative, 400, field="overage_limit_cents")


async def test_admin_adjustments_and_refunds(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    debit = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": -300, "description": "correction"},
        headers=ADMIN,
    )
    assert debit.status_code == 201, debit.text
    assert debit.json()["transaction"]["kind"] == "adjustment"
    assert debit.json()["balance"]["free"] == 700
    zero = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": 0, "description": "x"},
        headers=ADMIN,
    )
    assert_error(zero, 400, field="amount_cents")
    too_much = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": -701, "description": "x"},
        headers=ADMIN,
    )
    assert_error(too_much, 402, "insufficient_funds")

    refund = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/refunds",
        json={"amount_cents": 200, "description": "refund", "reference": "refund:1"},
        headers=ADMIN,
    )
    assert refund.status_code == 201, refund.text
    assert refund.json()["transaction"]["kind"] == "refund"
    assert refund.json()["transaction"]["amount_cents"] == -200
    assert (await balance(client, tenant))["free"] == 500

    unknown = await client.post(
        f"/v1/admin/organizations/{uuid.uuid4()}/adjustments",
        json={"amount_cents": 5, "description": "x"},
        headers=ADMIN,
    )
    assert_error(unknown, 404)
    assert await verify(state) == []


# -- idempotency ----------------------------------------------------------------------------------------


async def test_retried_charge_with_its_key_debits_once(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    first = await charge(client, tenant, 250, key="charge-1", description="call 1")
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    for _ in range(3):
        again = await charge(client, tenant, 250, key="charge-1", description="call 1")
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
    assert (await balance(client, tenant))["free"] == 750
    assert await count_rows(state, "ledger_entries") == 2  # opening balance + one debit
    assert await verify(state) == []


async def test_key_order_of_json_fields_does_not_matter(client, new_tenant):
    tenant = await new_tenant(balance=1000)
    headers = {**tenant.headers, "Idempotency-Key": "k", "content-type": "application/json"}
    first = await client.post(
        "/v1/billing/charges", content=b'{"amount_cents": 5, "description": "a"}', headers=headers
    )
    second = await client.post(
        "/v1/billing/charges", content=b'{"description":"a","amount_cents":5}', headers=headers
    )
    assert first.status_code == second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert (await balance(client, tenant))["free"] == 995


async def test_same_key_with_a_different_body_is_409(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    assert (await charge(client, tenant, 100, key="k-409")).status_code == 201
    response = await charge(client, tenant, 200, key="k-409")
    assert_error(response, 409, "idempotency_key_reused", field="Idempotency-Key")
    # the same key on another money route is another request, too
    hold = await client.post(
        "/v1/billing/holds",
        json={"amount_cents": 100},
        headers={**tenant.headers, "Idempotency-Key": "k-409"},
    )
    assert_error(hold, 409, "idempotency_key_reused")
    assert (await balance(client, tenant)) == {"free": 900, "reserved": 0, "total": 900, "currency": "usd"}
    assert await verify(state) == []


async def test_keys_are_scoped_to_the_organization(client, new_tenant):
    alice = await new_tenant(name="Alice", balance=1000)
    bob = await new_tenant(name="Bob", balance=1000)
    assert (await charge(client, alice, 100, key="shared")).status_code == 201
    bobs = await charge(client, bob, 300, key="shared")
    assert bobs.status_code == 201
    assert "Idempotent-Replayed" not in bobs.headers
    assert (await balance(client, alice))["free"] == 900
    assert (await balance(client, bob))["free"] == 700


async def test_a_refused_request_does_not_burn_its_key(client, new_tenant, state):
    tenant = await new_tenant(balance=100)
    assert_error(await charge(client, tenant, 500, key="retry-me"), 402, "insufficient_funds")
    top_up = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": 1000, "description": "top-up"},
        headers=ADMIN,
    )
    assert top_up.status_code == 201
    retried = await charge(client, tenant, 500, key="retry-me")
    assert retried.status_code == 201, retried.text
    assert "Idempotent-Replayed" not in retried.headers
    assert (await balance(client, tenant))["free"] == 600
    assert await verify(state) == []


async def test_admin_adjustment_is_idempotent_too(client, tenant, state):
    headers = {**ADMIN, "Idempotency-Key": "opening"}
    body = {"amount_cents": 5000, "description": "opening"}
    url = f"/v1/admin/organizations/{tenant.org_id}/adjustments"
    first = await client.post(url, json=body, headers=headers)
    second = await client.post(url, json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert (await balance(client, tenant))["free"] == 5000


@pytest.mark.parametrize("key", ["", "x" * 256])
async def test_invalid_idempotency_key_is_400(client, new_tenant, key):
    tenant = await new_tenant(balance=1000)
    response = await client.post(
        "/v1/billing/charges", json={"amount_cents": 5}, headers={**tenant.headers, "Idempotency-Key": key}
    )
    assert_error(response, 400, "invalid_idempotency_key", field="Idempotency-Key")
    assert (await balance(client, tenant))["free"] == 1000


# -- holds ------------------------------------------------------------------------------------------------


async def create_hold(client, tenant, amount: int, **fields):
    return await client.post(
        "/v1/billing/holds", json={"amount_cents": amount, **fields}, headers=tenant.headers
    )


async def test_hold_moves_free_to_reserved(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    response = await create_hold(client, tenant, 300, description="call in progress", metadata={"call": 1})
    assert response.status_code == 201, response.text
    body = response.json()
    hold = body["hold"]
    assert hold["status"] == "pending"
    assert hold["amount_cents"] == 300
    assert hold["captured_cents"] is None
    assert hold["metadata"] == {"call": 1}
    assert body["balance"] == {"free": 700, "reserved": 300, "total": 1000, "currency": "usd"}
    assert body["transaction"]["kind"] == "hold"
    assert body["transaction"]["amount_cents"] == 0
    assert await balance(client, tenant) == body["balance"]
    fetched = await client.get(f"/v1/billing/holds/{hold['id']}", headers=tenant.headers)
    assert fetched.status_code == 200
    assert fetched.json() == hold
    assert await verify(state) == []


async def test_capture_full(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    hold = (await create_hold(client, tenant, 300)).json()["hold"]
    response = await client.post(f"/v1/billing/holds/{hold['id']}/capture", headers=tenant.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["hold"]["status"] == "captured"
    assert body["hold"]["captured_cents"] == 300
    assert body["hold"]["finalized_at"] is not None
    assert body["transaction"]["kind"] == "capture"
    assert body["transaction"]["amount_cents"] == -300
    assert body["balance"] == {"free": 700, "reserved": 0, "total": 700, "currency": "usd"}
    assert await balance(client, tenant) == body["balance"]
    assert await verify(state) == []


async def test_capture_partial_releases_the_rest(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    hold = (await create_hold(client, tenant, 300)).json()["hold"]
    response = await client.post(
        f"/v1/billing/holds/{hold['id']}/capture", json={"amount_cents": 120}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["hold"]["status"] == "captured"
    assert body["hold"]["captured_cents"] == 120
    # the answer describes the capture itself, with the balance after the remainder came back
    assert body["transaction"]["kind"] == "capture"
    assert body["transaction"]["amount_cents"] == -120
    assert body["balance"] == {"free": 880, "reserved": 0, "total": 880, "currency": "usd"}
    assert await balance(client, tenant) == body["balance"]
    kinds = [
        t["kind"]
        for t in (await client.get("/v1/billing/transactions", headers=tenant.headers)).json()["data"]
    ]
    assert kinds == ["adjustment", "hold", "capture", "release"]
    assert await verify(state) == []


async def test_release(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    hold = (await create_hold(client, tenant, 300)).json()["hold"]
    response = await client.post(f"/v1/billing/holds/{hold['id']}/release", headers=tenant.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["hold"]["status"] == "released"
    assert body["hold"]["captured_cents"] is None
    assert body["transaction"]["kind"] == "release"
    assert body["balance"] == {"free": 1000, "reserved": 0, "total": 1000, "currency": "usd"}
    assert await verify(state) == []


async def test_capture_after_release_is_409(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    hold = (await create_hold(client, tenant, 300)).json()["hold"]
    assert (
        await client.post(f"/v1/billing/holds/{hold['id']}/release", headers=tenant.headers)
    ).status_code == 200
    response = await client.post(f"/v1/billing/holds/{hold['id']}/capture", headers=tenant.headers)
    body = assert_error(response, 409, "hold_released")
    assert body["hold_status"] == "released"
    again = await client.post(f"/v1/billing/holds/{hold['id']}/release", headers=tenant.headers)
    assert_error(again, 409, "hold_released")
    assert await balance(client, tenant) == {"free": 1000, "reserved": 0, "total": 1000, "currency": "usd"}
    assert await verify(state) == []


async def test_release_after_capture_is_409(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    hold = (await create_hold(client, tenant, 300)).json()["hold"]
    assert (
        await client.post(f"/v1/billing/holds/{hold['id']}/capture", headers=tenant.headers)
    ).status_code == 200
    assert_error(
        await client.post(f"/v1/billing/holds/{hold['id']}/release", headers=tenant.headers),
        409,
        "hold_captured",
    )
    assert_error(
        await client.post(f"/v1/billing/holds/{hold['id']}/capture", headers=tenant.headers),
        409,
        "hold_captured",
    )
    assert await balance(client, tenant) == {"free": 700, "reserved": 0, "total": 700, "currency": "usd"}
    assert await verify(state) == []


async def test_capture_more_than_held_is_400_and_keeps_the_hold(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    hold = (await create_hold(client, tenant, 300)).json()["hold"]
    response = await client.post(
        f"/v1/billing/holds/{hold['id']}/capture", json={"amount_cents": 301}, headers=tenant.headers
    )
    assert_error(response, 400, "capture_exceeds_hold", field="amount_cents")
    negative = await client.post(
        f"/v1/billing/holds/{hold['id']}/capture", json={"amount_cents": -1}, headers=tenant.headers
    )
    assert_error(negative, 400, field="amount_cents")
    assert (await client.get(f"/v1/billing/holds/{hold['id']}", headers=tenant.headers)).json()[
        "status"
    ] == "pending"
    assert await balance(client, tenant) == {"free": 700, "reserved": 300, "total": 1000, "currency": "usd"}
    assert (
        await client.post(f"/v1/billing/holds/{hold['id']}/release", headers=tenant.headers)
    ).status_code == 200
    assert await verify(state) == []


async def test_hold_needs_free_money(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    assert (await create_hold(client, tenant, 800)).status_code == 201
    assert_error(await create_hold(client, tenant, 201), 402, "insufficient_funds")
    assert_error(
        await charge(client, tenant, 201), 402, "insufficient_funds"
    )  # reserved money is not spendable
    assert (await charge(client, tenant, 200)).status_code == 201
    assert await balance(client, tenant) == {"free": 0, "reserved": 800, "total": 800, "currency": "usd"}
    assert await verify(state) == []


@pytest.mark.parametrize("seconds", [0, -5, 604801])
async def test_hold_expiry_must_be_in_range(client, new_tenant, seconds):
    tenant = await new_tenant(balance=1000)
    assert_error(
        await create_hold(client, tenant, 100, expires_in_seconds=seconds), 400, field="expires_in_seconds"
    )
    assert (await balance(client, tenant))["reserved"] == 0


async def test_hold_default_expiry_comes_from_the_config(client, new_tenant):
    tenant = await new_tenant(balance=1000)
    hold = (await create_hold(client, tenant, 100)).json()["hold"]
    from datetime import datetime

    created = datetime.fromisoformat(hold["created_at"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(hold["expires_at"].replace("Z", "+00:00"))
    assert abs((expires - created).total_seconds() - 900) < 2


async def test_holds_of_other_organizations_are_invisible(client, new_tenant, state):
    alice = await new_tenant(name="Alice", balance=1000)
    bob = await new_tenant(name="Bob", balance=1000)
    hold = (await create_hold(client, alice, 300)).json()["hold"]
    for method, suffix in (("GET", ""), ("POST", "/capture"), ("POST", "/release")):
        response = await client.request(
            method, f"/v1/billing/holds/{hold['id']}{suffix}", headers=bob.headers
        )
        assert_error(response, 404, "hold_not_found")
    assert_error(
        await client.get(f"/v1/billing/holds/{uuid.uuid4()}", headers=alice.headers), 404, "hold_not_found"
    )
    assert (await client.get(f"/v1/billing/holds/{hold['id']}", headers=alice.headers)).json()[
        "status"
    ] == "pending"
    assert await verify(state) == []


async def test_hold_expires_and_money_returns(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    short = (await create_hold(client, tenant, 300, expires_in_seconds=1)).json()["hold"]
    long = (await create_hold(client, tenant, 200, expires_in_seconds=600)).json()["hold"]
    assert await balance(client, tenant) == {"free": 500, "reserved": 500, "total": 1000, "currency": "usd"}
    await asyncio.sleep(1.1)

    # due but not yet swept: it can no longer be captured or released
    assert_error(
        await client.post(f"/v1/billing/holds/{short['id']}/capture", headers=tenant.headers),
        409,
        "hold_expired",
    )
    assert_error(
        await client.post(f"/v1/billing/holds/{short['id']}/release", headers=tenant.headers),
        409,
        "hold_expired",
    )

    await state.worker.run_once()

    expired = (await client.get(f"/v1/billing/holds/{short['id']}", headers=tenant.headers)).json()
    assert expired["status"] == "expired"
    assert expired["finalized_at"] is not None
    assert (await client.get(f"/v1/billing/holds/{long['id']}", headers=tenant.headers)).json()[
        "status"
    ] == "pending"
    assert await balance(client, tenant) == {"free": 800, "reserved": 200, "total": 1000, "currency": "usd"}
    assert_error(
        await client.post(f"/v1/billing/holds/{short['id']}/capture", headers=tenant.headers),
        409,
        "hold_expired",
    )
    assert await verify(state) == []

    await state.worker.run_once()  # a second sweep finds nothing more to do
    assert await balance(client, tenant) == {"free": 800, "reserved": 200, "total": 1000, "currency": "usd"}
    assert await verify(state) == []


async def test_capture_and_release_are_idempotent_with_a_key(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    hold = (await create_hold(client, tenant, 300)).json()["hold"]
    headers = {**tenant.headers, "Idempotency-Key": "cap-1"}
    first = await client.post(
        f"/v1/billing/holds/{hold['id']}/capture", json={"amount_cents": 100}, headers=headers
    )
    second = await client.post(
        f"/v1/billing/holds/{hold['id']}/capture", json={"amount_cents": 100}, headers=headers
    )
    assert first.status_code == second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert await balance(client, tenant) == {"free": 900, "reserved": 0, "total": 900, "currency": "usd"}
    assert await verify(state) == []
