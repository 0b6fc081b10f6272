"""The alerts plugin end to end: webhook endpoints over HTTP, balance levels crossed by every kind
of write, signed deliveries to a real receiver on 127.0.0.1 (verified with the `standardwebhooks`
package and the sha256 header), retries, 410, Retry-After, redirects, replay and rotation."""

from __future__ import annotations

import base64
import datetime
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from alerts_support import Receiver, alerts_config, deliver, deliver_until
from conftest import ADMIN, assert_error

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


config_overrides = alerts_config


async def endpoint(
    client: Any, tenant: Any, receiver: Receiver, events: list[str] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhooks", json={"url": receiver.url, "events": events or ["*"]}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    receiver.secrets.append(body["secret"])
    return body


async def levels(client: Any, tenant: Any, thresholds: list[int]) -> None:
    response = await client.put("/v1/billing/alerts", json={"thresholds": thresholds}, headers=tenant.headers)
    assert response.status_code == 200, response.text


async def charge(client: Any, tenant: Any, cents: int) -> None:
    response = await client.post("/v1/billing/charges", json={"amount_cents": cents}, headers=tenant.headers)
    assert response.status_code == 201, response.text


async def adjust(client: Any, tenant: Any, cents: int) -> None:
    response = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": cents, "description": "test"},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text


async def deliveries(client: Any, tenant: Any, hook: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=tenant.headers)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["data"]
    return result


async def queued(state: Any) -> int:
    async with state.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM alerts_deliveries"))).scalar_one())


# -- levels ------------------------------------------------------------------------------------------


async def test_one_debit_across_two_levels_sends_two_alerts_then_none_then_recovered(
    client, state, new_tenant, receiver
):
    tenant = await new_tenant(balance=1200)
    await endpoint(client, tenant, receiver)
    await levels(client, tenant, [1000, 500])

    await charge(client, tenant, 800)  # 1200 -> 400 crosses 1000 and 500 at once
    await deliver(state)
    low = receiver.events("billing.balance_low")
    assert sorted(e["data"]["threshold_cents"] for e in low) == [500, 1000]
    assert sorted(e["data"]["threshold"] for e in low) == [5.0, 10.0]
    first = low[0]
    assert set(first) == {"id", "event", "timestamp", "api_version", "organization_id", "data"}
    assert first["organization_id"] == tenant.org_id
    assert first["data"]["balance"] == {
        "free": 4.0,
        "reserved": 0.0,
        "total": 4.0,
        "free_cents": 400,
        "reserved_cents": 0,
        "total_cents": 400,
    }
    assert first["data"]["currency"] == "USD"
    assert len({e["id"] for e in low}) == 2
    assert {r.headers["webhook-id"] for r in receiver.received} == {e["id"] for e in low}

    await charge(client, tenant, 100)  # 400 -> 300: below both already, nothing new
    await deliver(state)
    assert len(receiver.received) == 2

    await adjust(client, tenant, 1000)  # 300 -> 1300: back above both, they re-arm
    await deliver(state)
    (recovered,) = receiver.events("billing.balance_recovered")
    assert recovered["data"]["threshold_cents"] == 1000
    assert recovered["data"]["balance"]["free_cents"] == 1300

    await charge(client, tenant, 350)  # 1300 -> 950: 1000 fires again, once
    await deliver(state)
    assert [e["data"]["threshold_cents"] for e in receiver.events("billing.balance_low")][2:] == [1000]
    assert len(receiver.received) == 4


async def test_a_rolled_back_debit_sends_nothing(client, state, new_tenant, receiver):
    tenant = await new_tenant(balance=1200)
    await endpoint(client, tenant, receiver)
    await levels(client, tenant, [1000])
    org_id = uuid.UUID(tenant.org_id)

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with state.db.transaction() as conn:
            posted = await state.ledger.charge(org_id, 700, conn=conn)
            assert posted.account.free_cents == 500
            raise Abort
    assert await queued(state) == 0
    await deliver(state)
    assert receiver.received == []
    await charge(client, tenant, 700)  # the same debit, committed: the alert goes out
    await deliver(state)
    assert [e["data"]["threshold_cents"] for e in receiver.events()] == [1000]


async def test_an_adjustment_a_hold_and_its_release_are_seen(client, state, new_tenant, receiver):
    tenant = await new_tenant(balance=1100)
    await endpoint(client, tenant, receiver, ["billing.balance_low", "billing.balance_recovered"])
    await levels(client, tenant, [1000])

    await adjust(client, tenant, -200)  # 1100 -> 900
    await deliver(state)
    assert [e["event"] for e in receiver.events()] == ["billing.balance_low"]
    await adjust(client, tenant, 200)  # 900 -> 1100
    await deliver(state)
    assert [e["event"] for e in receiver.events()][-1] == "billing.balance_recovered"

    hold = await client.post("/v1/billing/holds", json={"amount_cents": 300}, headers=tenant.headers)
    assert hold.status_code == 201, hold.text
    await deliver(state)
    last = receiver.events()[-1]
    assert last["event"] == "billing.balance_low"
    assert last["data"]["balance"] == {
        "free": 8.0,
        "reserved": 3.0,
        "total": 11.0,
        "free_cents": 800,
        "reserved_cents": 300,
        "total_cents": 1100,
    }
    released = await client.post(
        f"/v1/billing/holds/{hold.json()['hold']['id']}/release", headers=tenant.headers
    )
    assert released.status_code == 200, released.text
    await deliver(state)
    assert [e["event"] for e in receiver.events()] == [
        "billing.balance_low",
        "billing.balance_recovered",
        "billing.balance_low",
        "billing.balance_recovered",
    ]


async def test_depleted_and_only_the_subscribed_events(client, state, new_tenant, receiver):
    tenant = await new_tenant(balance=300)
    await endpoint(client, tenant, receiver, ["billing.balance_depleted"])
    await levels(client, tenant, [200])
    await charge(client, tenant, 300)  # 300 -> 0: below 200 (not subscribed) and depleted
    await deliver(state)
    (depleted,) = receiver.events()
    assert depleted["event"] == "billing.balance_depleted"
    assert depleted["data"]["balance"]["free_cents"] == 0
    assert depleted["data"]["threshold_cents"] == 0


async def test_levels_in_both_forms(client, new_tenant):
    tenant = await new_tenant(currency="eur")
    put = await client.put("/v1/billing/alerts", json={"low_balance_threshold": 25.5}, headers=tenant.headers)
    assert put.status_code == 200, put.text
    assert put.json() == {"low_balance_threshold": 25.5, "thresholds": [2550], "currency": "EUR"}
    put = await client.put(
        "/v1/billing/alerts", json={"thresholds": [500, 2000, 500]}, headers=tenant.headers
    )
    assert put.json()["thresholds"] == [2000, 500]
    got = await client.get("/v1/billing/alerts", headers=tenant.headers)
    assert got.json() == {"low_balance_threshold": 20.0, "thresholds": [2000, 500], "currency": "EUR"}
    both = await client.put(
        "/v1/billing/alerts", json={"low_balance_threshold": 5, "thresholds": [100]}, headers=tenant.headers
    )
    assert_error(both, 400, "conflicting_fields")
    assert_error(
        await client.put("/v1/billing/alerts", json={"low_balance_threshold": 1.001}, headers=tenant.headers),
        400,
        field="low_balance_threshold",
    )
    assert_error(
        await client.put("/v1/billing/alerts", json={"low_balance_threshold": "5"}, headers=tenant.headers),
        400,
    )
    for disable in ({"low_balance_threshold": None}, {"thresholds": []}, {"thresholds": None}):
        put = await client.put("/v1/billing/alerts", json=disable, headers=tenant.headers)
        assert put.json() == {"low_balance_threshold": None, "thresholds": [], "currency": "EUR"}, disable


# -- endpoints -----------------------------------------------------------------------------------------


async def test_endpoint_routes_secrets_and_scope(client, new_tenant, receiver):
    owner = await new_tenant(name="Owner")
    stranger = await new_tenant(name="Stranger")
    created = await endpoint(client, owner, receiver, ["billing.balance_low", "payment.failed"])
    secret = created["secret"]
    assert secret.startswith("whsec_") and 24 <= len(base64.b64decode(secret[6:])) <= 64
    listed = (await client.get("/v1/webhooks", headers=owner.headers)).json()["data"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0]
    assert (await client.get("/v1/webhooks", headers=stranger.headers)).json()["data"] == []

    own = base64.b64encode(b"k" * 24).decode()
    mine = await client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "events": ["*"], "secret": f"whsec_{own}"},
        headers=owner.headers,
    )
    assert mine.status_code == 201 and mine.json()["secret"] == f"whsec_{own}"
    for bad in ("k" * 40, "whsec_" + base64.b64encode(b"k" * 23).decode(), "whsec_not base64!", "whsec_"):
        refused = await client.post(
            "/v1/webhooks", json={"url": receiver.url, "events": ["*"], "secret": bad}, headers=owner.headers
        )
        assert_error(refused, 422, "invalid_secret", field="secret")
    assert_error(
        await client.post(
            "/v1/webhooks", json={"url": receiver.url, "events": ["nope"]}, headers=owner.headers
        ),
        400,
    )

    path = f"/v1/webhooks/{created['id']}"
    for method, suffix, body in (
        ("GET", "", None),
        ("PATCH", "", {"status": "disabled"}),
        ("DELETE", "", None),
        ("POST", "/test", None),
        ("POST", "/rotate-secret", {"grace_seconds": 60}),
        ("GET", "/deliveries", None),
    ):
        answer = await client.request(method, path + suffix, json=body, headers=stranger.headers)
        assert_error(answer, 404, "webhook_not_found")
    assert (await client.get(path, headers=owner.headers)).json()["status"] == "enabled"
    assert_error(await client.get("/v1/webhooks/not-a-uuid", headers=owner.headers), 404, "webhook_not_found")
    assert_error(
        await client.post(
            "/v1/webhooks", json={"url": "http://x&y]", "events": ["*"]}, headers=owner.headers
        ),
        422,
        "invalid_url",
    )

    tested = await client.post(path + "/test", headers=owner.headers)
    assert tested.status_code == 200, tested.text
    assert tested.json()["status"] == "delivered" and tested.json()["status_codes"] == [200]
    assert receiver.events()[0]["event"] == "webhook.test"
    replay = f"/v1/webhooks/deliveries/{tested.json()['id']}/replay"
    assert_error(await client.post(replay, headers=stranger.headers), 404, "delivery_not_found")

    patched = await client.patch(path, json={"events": ["*"], "status": "disabled"}, headers=owner.headers)
    assert patched.json()["events"] == ["*"] and patched.json()["status"] == "disabled"
    assert_error(await client.post(path + "/test", headers=owner.headers), 422, "endpoint_disabled")
    deleted = await client.delete(path, headers=owner.headers)
    assert deleted.status_code == 200 and deleted.json() == {"id": created["id"], "deleted": True}
    assert_error(await client.get(path, headers=owner.headers), 404, "webhook_not_found")


async def test_the_providers_webhook_route_still_reaches_the_core(client):
    """/v1/webhooks/stripe is the core's provider webhook, beside /v1/webhooks/{id}."""
    body = b'{"id": "evt_x", "type": "payment_intent.succeeded"}'
    core = await client.post("/v1/stripe/webhook", content=body)
    beside = await client.post("/v1/webhooks/stripe", content=body)
    assert core.status_code == beside.status_code
    assert core.status_code not in (404, 405)
    assert core.json()["code"] == beside.json()["code"]
    assert "error" not in beside.json() or isinstance(beside.json()["error"], dict)  # not 004's envelope


# -- delivery ------------------------------------------------------------------------------------------


async def test_receiver_down_twice_then_the_third_attempt_delivers_with_the_same_id(
    client, state, new_tenant, receiver
):
    tenant = await new_tenant(balance=1200)
    hook = await endpoint(client, tenant, receiver, ["billing.balance_low"])
    await levels(client, tenant, [1000])
    receiver.script = [(500, {}), (503, {})]
    await charge(client, tenant, 300)
    await deliver_until(state, lambda: len(receiver.received) >= 3)
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(ids) == 1
    timestamps = [r.headers["webhook-timestamp"] for r in receiver.received]
    assert all(t.isdigit() for t in timestamps)
    (logged,) = await deliveries(client, tenant, hook)
    assert logged["status"] == "delivered"
    assert logged["attempts"] == 3
    assert logged["status_codes"] == [500, 503, 200]
    assert logged["event_id"] == ids.pop()
    assert logged["next_attempt_at"] is None


async def test_410_disables_the_endpoint_and_patch_enables_it_again(client, state, new_tenant, receiver):
    tenant = await new_tenant(balance=1200)
    hook = await endpoint(client, tenant, receiver, ["billing.balance_low", "billing.balance_recovered"])
    await levels(client, tenant, [1000])
    receiver.script = [(410, {})]
    await charge(client, tenant, 300)
    await deliver_until(state, lambda: len(receiver.received) >= 1)
    await deliver(state)
    got = (await client.get(f"/v1/webhooks/{hook['id']}", headers=tenant.headers)).json()
    assert (got["status"], got["disabled_reason"]) == ("disabled", "gone")
    (logged,) = await deliveries(client, tenant, hook)
    assert (logged["status"], logged["status_codes"]) == ("failed", [410])

    await adjust(client, tenant, 500)  # recovered: not queued for a disabled endpoint
    await deliver(state)
    assert len(receiver.received) == 1

    enabled = await client.patch(
        f"/v1/webhooks/{hook['id']}", json={"status": "enabled"}, headers=tenant.headers
    )
    assert (enabled.json()["status"], enabled.json()["disabled_reason"]) == ("enabled", None)
    await charge(client, tenant, 700)  # 1400 -> 700: crosses 1000 again
    await deliver(state)
    assert [e["event"] for e in receiver.events()][-1] == "billing.balance_low"


async def test_failed_then_replayed_with_the_same_id(client, state, new_tenant, receiver, make_state):
    tenant = await new_tenant(balance=1200)
    hook = await endpoint(client, tenant, receiver, ["billing.balance_low"])
    await levels(client, tenant, [1000])
    receiver.default = (500, {})
    await charge(client, tenant, 300)
    await deliver_until(state, lambda: len(receiver.received) >= 5)
    await deliver(state)
    (logged,) = await deliveries(client, tenant, hook)
    assert (logged["status"], logged["attempts"]) == ("failed", 5)
    assert logged["status_codes"] == [500] * 5 and logged["last_error"] == "HTTP 500"
    failed = await client.get(
        f"/v1/webhooks/{hook['id']}/deliveries", params={"status": "failed"}, headers=tenant.headers
    )
    assert [d["id"] for d in failed.json()["data"]] == [logged["id"]]

    receiver.default = (204, {})
    replayed = await client.post(f"/v1/webhooks/deliveries/{logged['id']}/replay", headers=tenant.headers)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["status"] == "pending"
    assert_error(
        await client.post(f"/v1/webhooks/deliveries/{logged['id']}/replay", headers=tenant.headers),
        409,
        "delivery_pending",
    )
    await deliver_until(state, lambda: len(receiver.received) >= 6)
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert receiver.received[-1].body == receiver.received[0].body
    (again,) = await deliveries(client, tenant, hook)
    assert again["status"] == "delivered" and again["status_codes"][-1] == 204


async def test_429_and_503_honour_retry_after(client, state, new_tenant, receiver):
    tenant = await new_tenant(balance=1200)
    hook = await endpoint(client, tenant, receiver, ["billing.balance_low"])
    await levels(client, tenant, [1000])
    receiver.script = [(429, {"Retry-After": "30"})]
    await charge(client, tenant, 300)
    await deliver(state)
    (logged,) = await deliveries(client, tenant, hook)
    wait = datetime.datetime.fromisoformat(logged["next_attempt_at"]) - datetime.datetime.now(datetime.UTC)
    assert 25 < wait.total_seconds() <= 30  # not the 0.2 s of the schedule
    assert logged["status_codes"] == [429]


async def test_redirects_are_never_followed(client, state, new_tenant, receiver):
    target = Receiver().start()
    try:
        tenant = await new_tenant(balance=1200)
        hook = await endpoint(client, tenant, receiver, ["billing.balance_low"])
        await levels(client, tenant, [1000])
        receiver.default = (307, {"Location": target.url})
        await charge(client, tenant, 300)
        await deliver_until(state, lambda: len(receiver.received) >= 5)
        await deliver(state)
        assert target.received == []
        (logged,) = await deliveries(client, tenant, hook)
        assert (logged["status"], logged["status_codes"]) == ("failed", [307] * 5)
    finally:
        target.stop()


async def test_during_a_rotation_both_signatures_verify(client, state, new_tenant, receiver):
    tenant = await new_tenant(balance=1200)
    hook = await endpoint(client, tenant, receiver, ["billing.balance_low"])
    old = hook["secret"]
    rotated = await client.post(
        f"/v1/webhooks/{hook['id']}/rotate-secret", json={"grace_seconds": 3600}, headers=tenant.headers
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and rotated.json()["previous_secret_expires_at"]
    receiver.secrets[:] = [old, new]  # each delivery must verify with either secret alone
    await client.post(f"/v1/webhooks/{hook['id']}/test", headers=tenant.headers)
    (first,) = receiver.received
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    assert len(first.headers["x-billfold-signature"].split(",")) == 2

    ended = await client.post(
        f"/v1/webhooks/{hook['id']}/rotate-secret", json={"grace_seconds": 0}, headers=tenant.headers
    )
    receiver.secrets[:] = [ended.json()["secret"]]
    await client.post(f"/v1/webhooks/{hook['id']}/test", headers=tenant.headers)
    assert len(receiver.received[-1].headers["webhook-signature"].split(" ")) == 1


async def test_payment_events_in_004_units(client, state, new_tenant, receiver):
    tenant = await new_tenant()
    await endpoint(client, tenant, receiver, ["payment.succeeded", "payment.failed"])
    await client.post(
        "/v1/billing/default-payment-method",
        json={"payment_method_id": "pm_card_visa"},
        headers=tenant.headers,
    )
    topped = await client.post("/v1/billing/top-up", json={"amount_cents": 5000}, headers=tenant.headers)
    assert topped.status_code == 201, topped.text
    await deliver(state)
    (paid,) = receiver.events("payment.succeeded")
    data = paid["data"]
    assert (data["amount"], data["amount_cents"], data["currency"], data["purpose"]) == (
        50.0,
        5000,
        "USD",
        "top_up",
    )
    assert data["payment_id"]


async def test_charges_keep_the_single_statement_path_and_strangers_are_refused_first(client, state):
    """The plugin implements only the level hooks: a charge that crosses nothing is never made a
    transaction for it. A request without a key is 401 before its body is looked at."""
    assert not state.ledger.debits_need_transaction()
    assert state.hooks.implemented("billfold_balance_crossed")
    anonymous = await client.post("/v1/webhooks", json={"url": 5})
    assert_error(anonymous, 401)
    anonymous = await client.put("/v1/billing/alerts", content=b"{not json")
    assert_error(anonymous, 401)
