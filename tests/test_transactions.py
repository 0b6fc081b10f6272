"""GET /v1/billing/transactions (documents 001 and 004), /credits and /credits/history (002),
and /balance (004): parameters, the transaction object, and pagination walks that neither miss
nor repeat an entry while new charges are being written."""

from __future__ import annotations

import asyncio
import datetime
import re
import uuid

import pytest

from conftest import ADMIN, assert_error, minor_balance, verify

TX = "/v1/billing/transactions"


async def adjust(client, tenant, amount: int, description: str = "adjustment") -> dict:
    response = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": amount, "description": description},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    return response.json()["transaction"]


async def charge(client, tenant, amount: int, **fields) -> dict:
    response = await client.post(
        "/v1/billing/charges", json={"amount_cents": amount, **fields}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    return response.json()["transaction"]


async def listing(client, tenant, query: str = "") -> dict:
    response = await client.get(f"{TX}{query}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def make_entries(client, tenant, n: int) -> list[int]:
    """An opening credit, then n-1 debits of 1..n-1 cents: n entries, oldest first."""
    ids = [(await adjust(client, tenant, 1_000_000, "opening"))["id"]]
    for i in range(1, n):
        ids.append((await charge(client, tenant, i, description=f"charge {i}"))["id"])
    return ids


# -- the transaction object ------------------------------------------------------------------------


async def test_transaction_object_has_the_fields_of_document_001(client, new_tenant):
    tenant = await new_tenant(balance=1000)
    await charge(
        client,
        tenant,
        16,
        description="Call billing: 2 minutes \u00d7 $0.08",
        call_id=987654321,
        phone_number_id=201,
        phone_number_value="+15551234567",
    )
    page = await listing(client, tenant)
    credit, debit = page["data"]
    documented = {
        "id",
        "kind",
        "description",
        "amount_cents",
        "amount_usd",
        "call_id",
        "phone_number_id",
        "phone_number_value",
        "metadata",
        "created_at",
    }
    assert documented <= set(debit)
    assert isinstance(debit["id"], int)
    assert debit["kind"] == "debit"
    assert debit["description"] == "Call billing: 2 minutes \u00d7 $0.08"
    assert debit["amount_cents"] == -16
    assert debit["amount_usd"] == "-0.16"
    assert debit["call_id"] == 987654321
    assert debit["phone_number_id"] == 201
    assert debit["phone_number_value"] == "+15551234567"
    assert debit["metadata"] == {}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", debit["created_at"]), debit["created_at"]

    assert credit["kind"] == "adjustment"
    assert credit["amount_cents"] == 1000
    assert credit["amount_usd"] == "10.00"
    assert credit["call_id"] is None
    assert credit["phone_number_id"] is None
    assert credit["phone_number_value"] is None
    assert credit["id"] < debit["id"]


@pytest.mark.parametrize(
    ("amount", "formatted"), [(1, "-0.01"), (99, "-0.99"), (100, "-1.00"), (123456, "-1234.56")]
)
async def test_amount_usd_formatting(client, new_tenant, amount, formatted):
    tenant = await new_tenant(balance=200000)
    assert (await charge(client, tenant, amount))["amount_usd"] == formatted


# -- parameters ------------------------------------------------------------------------------------


async def test_limit_default_and_bounds(client, new_tenant):
    tenant = await new_tenant()
    ids = await make_entries(client, tenant, 55)

    page = await listing(client, tenant)
    assert page["limit"] == 50
    assert [t["id"] for t in page["data"]] == ids[:50]  # oldest first by default
    assert page["has_more"] is True
    assert page["offset"] == 0
    assert page["total"] == 55

    assert [t["id"] for t in (await listing(client, tenant, "?limit=1"))["data"]] == ids[:1]
    assert len((await listing(client, tenant, "?limit=200"))["data"]) == 55
    assert (await listing(client, tenant, "?limit=200"))["has_more"] is False

    for bad in ("0", "201", "-1", "ten", "1.5"):
        body = assert_error(await client.get(f"{TX}?limit={bad}", headers=tenant.headers), 400, field="limit")
        assert "limit" in body["message"]


async def test_offset(client, new_tenant):
    tenant = await new_tenant()
    ids = await make_entries(client, tenant, 12)
    page = await listing(client, tenant, "?limit=5&offset=5")
    assert [t["id"] for t in page["data"]] == ids[5:10]
    assert page["offset"] == 5
    assert page["has_more"] is True
    last = await listing(client, tenant, "?limit=5&offset=10")
    assert [t["id"] for t in last["data"]] == ids[10:]
    assert last["has_more"] is False
    assert (await listing(client, tenant, "?offset=100"))["data"] == []
    assert_error(await client.get(f"{TX}?offset=-1", headers=tenant.headers), 400, field="offset")


async def test_kind_filter(client, new_tenant):
    tenant = await new_tenant(balance=5000)
    await charge(client, tenant, 10)
    await charge(client, tenant, 20)
    hold = (await client.post("/v1/billing/holds", json={"amount_cents": 30}, headers=tenant.headers)).json()[
        "hold"
    ]
    await client.post(f"/v1/billing/holds/{hold['id']}/release", headers=tenant.headers)
    await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/refunds",
        json={"amount_cents": 5, "description": "r"},
        headers=ADMIN,
    )

    def kinds(page: dict) -> list[str]:
        return [t["kind"] for t in page["data"]]

    assert kinds(await listing(client, tenant)) == [
        "adjustment",
        "debit",
        "debit",
        "hold",
        "release",
        "refund",
    ]
    debits = await listing(client, tenant, "?kind=debit")
    assert kinds(debits) == ["debit", "debit"]
    assert debits["total"] == 2
    assert [t["amount_cents"] for t in debits["data"]] == [-10, -20]
    assert kinds(await listing(client, tenant, "?kind=adjustment,refund")) == ["adjustment", "refund"]
    assert kinds(await listing(client, tenant, "?kind=credit")) == []
    assert kinds(await listing(client, tenant, "?kind=hold,release")) == ["hold", "release"]
    assert_error(await client.get(f"{TX}?kind=topup", headers=tenant.headers), 400, field="kind")


async def test_start_date_and_end_date(client, new_tenant):
    tenant = await new_tenant()
    ids = await make_entries(client, tenant, 6)
    everything = (await listing(client, tenant))["data"]
    today = datetime.datetime.now(datetime.UTC).date()
    tomorrow, yesterday = today + datetime.timedelta(days=1), today - datetime.timedelta(days=1)

    assert [
        t["id"] for t in (await listing(client, tenant, f"?start_date={today}&end_date={today}"))["data"]
    ] == ids
    assert (await listing(client, tenant, f"?start_date={tomorrow}"))["data"] == []
    assert (await listing(client, tenant, f"?end_date={yesterday}"))["data"] == []
    assert (await listing(client, tenant, f"?start_date={yesterday}&end_date={yesterday}"))["total"] == 0

    # precise instants: from the third entry's timestamp, up to the fifth's
    third, fifth = everything[2]["created_at"], everything[4]["created_at"]
    window = await listing(client, tenant, f"?start_date={third}&end_date={fifth}")
    assert [t["id"] for t in window["data"]] == ids[2:5]
    assert window["total"] == 3

    for field in ("start_date", "end_date"):
        assert_error(await client.get(f"{TX}?{field}=yesterday", headers=tenant.headers), 400, field=field)
        assert_error(await client.get(f"{TX}?{field}=2026-13-01", headers=tenant.headers), 400, field=field)


async def test_cursor_from_and_to(client, new_tenant):
    tenant = await new_tenant()
    ids = await make_entries(client, tenant, 9)
    first = await listing(client, tenant, "?limit=4&cursor=")
    cursor = first["next_cursor"]
    assert cursor is not None
    second = await listing(client, tenant, f"?limit=4&cursor={cursor}")
    assert [t["id"] for t in second["data"]] == ids[4:8]
    assert second["offset"] is None and second["total"] is None  # cursor pages are not counted
    third = await listing(client, tenant, f"?limit=4&cursor={second['next_cursor']}")
    assert [t["id"] for t in third["data"]] == ids[8:]
    assert third["has_more"] is False
    assert third["next_cursor"] is None

    today = datetime.datetime.now(datetime.UTC).date()
    tomorrow = today + datetime.timedelta(days=1)
    assert [
        t["id"] for t in (await listing(client, tenant, f"?from={today}&to={today}&limit=200"))["data"]
    ] == ids
    assert (await listing(client, tenant, f"?from={tomorrow}"))["data"] == []
    assert_error(await client.get(f"{TX}?from=soon", headers=tenant.headers), 400, field="from")
    assert_error(await client.get(f"{TX}?to=later", headers=tenant.headers), 400, field="to")
    assert_error(await client.get(f"{TX}?cursor=abc", headers=tenant.headers), 400, field="cursor")
    assert_error(await client.get(f"{TX}?cursor=-4", headers=tenant.headers), 400, field="cursor")
    assert_error(await client.get(f"{TX}?cursor=4&offset=2", headers=tenant.headers), 400, field="cursor")


async def test_newest_first(client, new_tenant):
    tenant = await new_tenant()
    ids = await make_entries(client, tenant, 7)
    page = await listing(client, tenant, "?order=desc&limit=3")
    assert [t["id"] for t in page["data"]] == ids[::-1][:3]
    following = await listing(client, tenant, f"?order=desc&limit=3&cursor={page['next_cursor']}")
    assert [t["id"] for t in following["data"]] == ids[::-1][3:6]
    assert_error(await client.get(f"{TX}?order=sideways", headers=tenant.headers), 400, field="order")


async def test_transactions_are_scoped_to_the_organization(client, new_tenant):
    alice = await new_tenant(name="Alice", balance=100)
    bob = await new_tenant(name="Bob", balance=200)
    await charge(client, bob, 5)
    alice_page = await listing(client, alice)
    assert [t["amount_cents"] for t in alice_page["data"]] == [100]
    assert alice_page["total"] == 1
    assert [t["amount_cents"] for t in (await listing(client, bob))["data"]] == [200, -5]


# -- walking while others write --------------------------------------------------------------------


async def _writer(client, tenant, n: int) -> None:
    await asyncio.gather(*(charge(client, tenant, 1, description="concurrent") for _ in range(n)))


async def _walk_offset(client, tenant) -> list[int]:
    seen: list[int] = []
    offset = 0
    while True:
        page, _ = await asyncio.gather(
            listing(client, tenant, f"?limit=7&offset={offset}"), _writer(client, tenant, 2)
        )
        seen.extend(t["id"] for t in page["data"])
        await _writer(client, tenant, 2)  # and more between the page fetches
        if not page["has_more"]:
            return seen
        offset += len(page["data"])
        assert len(seen) < 1000, "the walk does not end"


async def _walk_cursor(client, tenant, query: str) -> list[int]:
    seen: list[int] = []
    cursor = ""
    while True:
        page, _ = await asyncio.gather(
            listing(client, tenant, f"?limit=7&cursor={cursor}{query}"), _writer(client, tenant, 2)
        )
        seen.extend(t["id"] for t in page["data"])
        await _writer(client, tenant, 2)
        if not page["has_more"]:
            return seen
        cursor = page["next_cursor"]
        assert len(seen) < 1000, "the walk does not end"


@pytest.mark.parametrize("style", ["offset", "cursor", "cursor-desc"])
async def test_pagination_walk_under_concurrent_writes(client, new_tenant, state, style):
    tenant = await new_tenant()
    existing = await make_entries(client, tenant, 40)

    if style == "offset":
        seen = await _walk_offset(client, tenant)
    elif style == "cursor":
        seen = await _walk_cursor(client, tenant, "")
    else:
        seen = await _walk_cursor(client, tenant, "&order=desc")

    assert len(seen) == len(set(seen)), "an entry was returned twice"
    assert set(existing) <= set(seen), f"entries missed: {sorted(set(existing) - set(seen))}"
    assert seen == (sorted(seen, reverse=True) if style == "cursor-desc" else sorted(seen))
    # writes really happened while walking
    assert (await listing(client, tenant, "?limit=1"))["total"] > len(existing)
    assert await verify(state) == []


# -- document 002: credits -------------------------------------------------------------------------


async def test_credits(client, new_tenant):
    """Document 002: balance, reserved and available (balance - reserved) in decimillicents."""
    tenant = await new_tenant(balance=5000)
    await client.post("/v1/billing/holds", json={"amount_cents": 1200}, headers=tenant.headers)
    response = await client.get(f"/v1/billing/{tenant.org_id}/credits", headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "creditsBalanceDecimillicents": 5000 * 100_000,
        "reservedCreditsDecimillicents": 1200 * 100_000,
        "availableDecimillicents": 3800 * 100_000,
        "isSuspended": False,
        "suspendedAt": None,
        "paymentGracePeriodEndsAt": None,
    }
    blocked = await client.put(
        f"/v1/admin/organizations/{tenant.org_id}/status", json={"status": "blocked"}, headers=ADMIN
    )
    assert blocked.status_code == 200, blocked.text
    suspended = (await client.get(f"/v1/billing/{tenant.org_id}/credits", headers=tenant.headers)).json()
    assert suspended["isSuspended"] is True
    assert suspended["suspendedAt"] == blocked.json()["suspended_at"]


async def test_credit_history_walk(client, new_tenant, state):
    tenant = await new_tenant()
    await make_entries(client, tenant, 23)
    url = f"/v1/billing/{tenant.org_id}/credits/history"

    first = await client.get(f"{url}?limit=5", headers=tenant.headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"items", "cursor", "hasMore"}
    item = body["items"][0]
    assert set(item) == {
        "id",
        "entryType",
        "amountDecimillicents",
        "reason",
        "referenceId",
        "balanceAfter",
        "createdAt",
    }
    uuid.UUID(item["id"])
    assert item["entryType"] == "usage"  # newest first: the last charge
    assert item["reason"] == "charge 22"
    assert item["amountDecimillicents"] == -22 * 100_000
    assert item["balanceAfter"] == (1_000_000 - sum(range(1, 23))) * 100_000

    seen = [i["reason"] for i in body["items"]]
    cursor, has_more = body["cursor"], body["hasMore"]
    while has_more:
        page, _ = await asyncio.gather(
            client.get(f"{url}?limit=5&cursor={cursor}", headers=tenant.headers), _writer(client, tenant, 2)
        )
        assert page.status_code == 200, page.text
        seen.extend(i["reason"] for i in page.json()["items"])
        cursor, has_more = page.json()["cursor"], page.json()["hasMore"]
        await _writer(client, tenant, 1)
    # every entry that existed, once, newest first; later ones are not mixed in
    assert seen == [f"charge {i}" for i in range(22, 0, -1)] + ["opening"]
    assert cursor is None

    total = (await listing(client, tenant, "?limit=1"))["total"]
    assert 23 < total < 50
    default = (await client.get(url, headers=tenant.headers)).json()  # limit 50 by default
    assert len(default["items"]) == total
    assert default["hasMore"] is False and default["cursor"] is None
    # the product parses limit leniently: clamped to 1..100, anything unparseable is 50
    for lenient, expected in (("0", 1), ("-4", 1), ("201", total), ("x", total), ("", total)):
        page = (await client.get(f"{url}?limit={lenient}", headers=tenant.headers)).json()
        assert len(page["items"]) == expected, lenient
    for bad in ("zzz", str(uuid.uuid4()), "1"):
        response = await client.get(f"{url}?cursor={bad}", headers=tenant.headers)
        assert response.status_code == 400 and response.json()["_tag"] == "HttpApiDecodeError", response.text
    assert await verify(state) == []


# -- document 004: balance -------------------------------------------------------------------------


async def test_balance_free_reserved_total(client, new_tenant, state):
    tenant = await new_tenant(balance=10000)
    response = await client.get("/v1/billing/balance", headers=tenant.headers)
    # document 004: major units as JSON numbers, the currency upper-case
    assert response.json() == {"free": 100.0, "reserved": 0.0, "total": 100.0, "currency": "USD"}
    held = await client.post("/v1/billing/holds", json={"amount_cents": 2500}, headers=tenant.headers)
    await charge(client, tenant, 500)
    assert (await minor_balance(client, tenant.headers)) == {
        "free": 7000,
        "reserved": 2500,
        "total": 9500,
        "currency": "usd",
    }
    hold_id = held.json()["hold"]["id"]
    await client.post(
        f"/v1/billing/holds/{hold_id}/capture", json={"amount_cents": 1000}, headers=tenant.headers
    )
    assert (await minor_balance(client, tenant.headers)) == {
        "free": 8500,
        "reserved": 0,
        "total": 8500,
        "currency": "usd",
    }
    assert await verify(state) == []
