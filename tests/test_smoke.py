from __future__ import annotations

from conftest import ADMIN, verify


async def test_charge_and_balance(client, tenant, state):
    r = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": 20000, "description": "x"},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    r = await client.post(
        "/v1/billing/charges", json={"amount_cents": 16, "description": "call"}, headers=tenant.headers
    )
    assert r.status_code == 201, r.text
    print(r.json())
    r = await client.get("/v1/billing/balance", headers=tenant.headers)
    assert r.json() == {"free": 199.84, "reserved": 0.0, "total": 199.84, "currency": "USD"}
    assert await verify(state) == []
