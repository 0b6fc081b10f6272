"""The tiers plugin (plugins/tiers) through HTTP, on SQLite and on PostgreSQL, with the shipped
ladder: sms costs 0.79 cents (standard), 0.69 from unit 10,001 of a month (growth), 0.59 from unit
100,001 (scale); three closed months below a step's threshold move an organization down one step.
Months move on the business clock; month close is the core's driver."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import text

from billfold import StartupError, clock
from billfold.config.loader import ConfigError
from conftest import ADMIN, assert_error, minor_balance, open_client, run_cli, verify


def sms(n: int | str, quantity: int = 1, **extra: Any) -> dict[str, Any]:
    return {"channel": "sms", "quantity": quantity, "event_id": f"sms-{n}", **extra}


async def send(client, tenant, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/usage", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def tier(client, tenant, channel: str = "sms") -> dict[str, Any]:
    response = await client.get("/v1/billing/tier", params={"channel": channel}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    (only,) = response.json()["tiers"]
    assert only["channel"] == channel
    result: dict[str, Any] = only
    return result


def month_after(month: str, months: int = 1) -> str:
    year, number = int(month[:4]), int(month[5:7]) - 1 + months
    return f"{year + number // 12:04d}-{number % 12 + 1:02d}"


def go_to(month: str, day: int = 3) -> None:
    """Move the business clock to ``day`` of ``month`` (UTC)."""
    target = datetime.datetime(int(month[:4]), int(month[5:7]), day, 12, tzinfo=datetime.UTC)
    clock.set_offset(target - clock.now() + clock.offset())


async def close(state, month: str) -> None:
    """The month after ``month`` begins and ``month`` closes (the worker's job, run here)."""
    go_to(month_after(month))
    await state.month_close.close(month)


async def tier_events(state) -> list[dict[str, Any]]:
    async with state.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT payload FROM outbox_events WHERE type = 'tier.changed' ORDER BY id")
        )
        return [p if isinstance(p, dict) else json.loads(p) for p in rows.scalars()]


async def test_unit_10001_pays_the_next_step_and_the_tier_shows_the_progress(client, new_tenant, state):
    tenant = await new_tenant(balance=100_000)
    month = f"{clock.now().year:04d}-{clock.now().month:02d}"
    fresh = await tier(client, tenant)
    assert fresh == {
        "channel": "sms",
        "current": "standard",
        "qualification_source": "default",
        "volume_used": 0,
        "month": month,
        "current_threshold": 0,
        "next_tier": "growth",
        "next_threshold": 10000,
        "downgrade_counter": 0,
        "pinned_until": None,
    }

    first = await send(client, tenant, sms(1, 9_999))
    assert first["billing"]["unit_price"] == "0.79"
    assert first["billing"]["tier"] == {"channel": "sms", "current": "standard", "volume_used": 9_999}
    unit_10000 = await send(client, tenant, sms(2))
    assert unit_10000["billing"]["unit_price"] == "0.79"  # the 10,000th unit: still the first price
    # the threshold is reached: the organization moves up for its next event
    assert unit_10000["billing"]["tier"] == {"channel": "sms", "current": "growth", "volume_used": 10_000}
    unit_10001 = await send(client, tenant, sms(3))
    assert unit_10001["billing"]["unit_price"] == "0.69"
    assert unit_10001["billing"]["tier"]["volume_used"] == 10_001

    now = await tier(client, tenant)
    assert now == {
        **fresh,
        "current": "growth",
        "qualification_source": "volume",
        "volume_used": 10_001,
        "current_threshold": 10_000,
        "next_tier": "scale",
        "next_threshold": 100_000,
    }
    # money: round(10,000 x 0.79 + 0.69) through the carried fraction, never drifting
    assert (await minor_balance(client, tenant.headers))["free"] == 100_000 - 7901
    assert await tier_events(state) == [
        {"channel": "sms", "from": "standard", "to": "growth", "source": "volume", "month": month}
    ]
    # 004's month report shows the same progress beside the channel
    report = (await client.get("/v1/billing/usage", headers=tenant.headers)).json()
    (channel,) = report["channels"]
    assert channel["tier"]["current"] == "growth" and channel["tier"]["volume_used"] == 10_001
    # other channels keep their own, independent tier
    assert (await tier(client, tenant, "email"))["current"] == "standard"
    assert await verify(state) == []


async def test_an_event_straddling_the_threshold_is_priced_at_the_step_in_force(client, new_tenant, state):
    tenant = await new_tenant(balance=100_000)
    await send(client, tenant, sms(1, 9_998))
    straddling = await send(client, tenant, sms(2, 5))  # units 9,999..10,003
    assert straddling["billing"]["unit_price"] == "0.79"
    assert straddling["billing"]["tier"]["current"] == "growth"
    after = await send(client, tenant, sms(3))
    assert after["billing"]["unit_price"] == "0.69"
    # an event crossing two thresholds at once moves straight to the highest one reached
    big = await send(client, tenant, sms(4, 100_000))
    assert (big["billing"]["unit_price"], big["billing"]["tier"]["current"]) == ("0.69", "scale")
    assert (await send(client, tenant, sms(5)))["billing"]["unit_price"] == "0.59"


async def test_rcs_volume_counts_the_listed_message_types_and_prices_each(client, new_tenant, state):
    tenant = await new_tenant(balance=1_000_000)
    await send(
        client, tenant, {"channel": "rcs", "quantity": 6_000, "event_id": "a", "message_type": "basic"}
    )
    await send(
        client, tenant, {"channel": "rcs", "quantity": 4_000, "event_id": "b", "message_type": "single"}
    )
    assert (await tier(client, tenant, "rcs"))["current"] == "growth"
    single = await send(
        client, tenant, {"channel": "rcs", "quantity": 1, "event_id": "c", "message_type": "single"}
    )
    assert single["billing"]["unit_price"] == "1.35"
    untyped = await send(client, tenant, {"channel": "rcs", "quantity": 7, "event_id": "d"})
    assert untyped["billing"]["unit_price"] == "0.45"
    assert untyped["billing"]["tier"]["volume_used"] == 10_001  # untyped sends are not RCS volume


async def test_three_low_months_move_down_one_step_for_the_fourth(client, new_tenant, state):
    tenant = await new_tenant(balance=1_000_000)
    start = f"{clock.now().year:04d}-{clock.now().month:02d}"
    await send(client, tenant, sms("up", 10_000))
    await close(state, start)
    qualified = await tier(client, tenant)
    assert qualified["month"] == month_after(start)
    assert (qualified["current"], qualified["qualification_source"], qualified["downgrade_counter"]) == (
        "growth",
        "volume",
        0,
    )
    assert qualified["volume_used"] == 0

    seen = []
    for k in range(1, 4):  # months start+1, +2, +3: one message each, far below 10,000
        low = await send(client, tenant, sms(f"low-{k}"))
        assert low["billing"]["unit_price"] == "0.69"  # the step in force, retained
        await close(state, month_after(start, k))
        shown = await tier(client, tenant)
        seen.append((shown["current"], shown["qualification_source"], shown["downgrade_counter"]))
    assert seen == [("growth", "retained", 1), ("growth", "retained", 2), ("standard", "default", 3)]
    # the fourth month is priced at the step below
    assert (await send(client, tenant, sms("fourth")))["billing"]["unit_price"] == "0.79"
    changes = await tier_events(state)
    assert [(c["from"], c["to"], c["month"]) for c in changes] == [
        ("standard", "growth", start),
        ("growth", "standard", month_after(start, 4)),
    ]
    assert await verify(state) == []


async def test_one_month_back_above_the_threshold_resets_the_counter(client, new_tenant, state):
    tenant = await new_tenant(balance=1_000_000)
    start = f"{clock.now().year:04d}-{clock.now().month:02d}"
    await send(client, tenant, sms("up", 10_000))
    await close(state, start)
    await send(client, tenant, sms("low"))
    await close(state, month_after(start))
    assert (await tier(client, tenant))["downgrade_counter"] == 1
    # the month back above: the counter is reset as soon as the threshold is reached again
    await send(client, tenant, sms("back", 10_000))
    assert (await tier(client, tenant))["qualification_source"] == "volume" and (await tier(client, tenant))[
        "downgrade_counter"
    ] == 0
    await close(state, month_after(start, 2))
    shown = await tier(client, tenant)
    assert (shown["current"], shown["qualification_source"], shown["downgrade_counter"]) == (
        "growth",
        "volume",
        0,
    )


async def test_months_without_events_count_as_low_months(client, new_tenant, state):
    """The step of a new month is computed when its first event is priced: no close is waited for."""
    tenant = await new_tenant(balance=1_000_000)
    start = f"{clock.now().year:04d}-{clock.now().month:02d}"
    await send(client, tenant, sms("up", 10_000))
    go_to(month_after(start, 3))  # two empty months, no close ran
    shown = await tier(client, tenant)
    assert (shown["current"], shown["qualification_source"], shown["downgrade_counter"]) == (
        "growth",
        "retained",
        2,
    )
    go_to(month_after(start, 4))
    priced = await send(client, tenant, sms("later"))
    assert priced["billing"]["unit_price"] == "0.79"
    assert (await tier(client, tenant))["downgrade_counter"] == 3


async def test_a_pinned_step_survives_low_months_until_unpinned(client, new_tenant, state):
    tenant = await new_tenant(balance=1_000_000)
    start = f"{clock.now().year:04d}-{clock.now().month:02d}"
    path = f"/v1/admin/organizations/{tenant.org_id}/tiers/sms/pin"
    refused = await client.put(path, json={"step": "gold"}, headers=ADMIN)
    assert_error(refused, 400, "unknown_step", field="step")
    assert (await client.put(path, json={"step": "scale"}, headers=tenant.headers)).status_code == 401
    pinned = await client.put(path, json={"step": "scale", "reason": "contract"}, headers=ADMIN)
    assert pinned.status_code == 200, pinned.text
    assert (pinned.json()["current"], pinned.json()["qualification_source"]) == ("scale", "manual")
    assert (await send(client, tenant, sms(1)))["billing"]["unit_price"] == "0.59"
    for k in range(4):
        await close(state, month_after(start, k))
        shown = await tier(client, tenant)
        assert (shown["current"], shown["qualification_source"], shown["downgrade_counter"]) == (
            "scale",
            "manual",
            0,
        )
    unpinned = await client.delete(path, headers=ADMIN)
    assert unpinned.status_code == 200, unpinned.text
    assert (unpinned.json()["current"], unpinned.json()["qualification_source"]) == ("scale", "retained")
    assert_error(await client.delete(path, headers=ADMIN), 404, "not_pinned")
    # from now on the volume rules apply again: a low month counts
    await close(state, month_after(start, 4))
    assert (await tier(client, tenant))["downgrade_counter"] == 1
    assert [c["source"] for c in await tier_events(state)] == ["manual"]
    audit = (await client.get("/v1/admin/audit", params={"org_id": tenant.org_id}, headers=ADMIN)).json()
    rows = [(r["action"], r["target"], r["reason"]) for r in audit["data"] if r["action"].startswith("tier.")]
    assert sorted(rows) == [("tier.pinned", "sms", "contract"), ("tier.unpinned", "sms", None)]


async def test_a_pin_until_a_date_ends_by_itself(client, new_tenant, state):
    go_to(f"{clock.now().year:04d}-{clock.now().month:02d}", day=10)
    tenant = await new_tenant(balance=1_000_000)
    until = clock.now() + datetime.timedelta(days=2)
    path = f"/v1/admin/organizations/{tenant.org_id}/tiers/sms/pin"
    past = await client.put(path, json={"step": "growth", "until": "2001-01-01T00:00:00Z"}, headers=ADMIN)
    assert_error(past, 400, "validation_error", field="until")
    pinned = await client.put(path, json={"step": "growth", "until": until.isoformat()}, headers=ADMIN)
    assert pinned.json()["pinned_until"] is not None
    assert (await send(client, tenant, sms(1)))["billing"]["unit_price"] == "0.69"
    clock.set_offset(clock.offset() + datetime.timedelta(days=3))
    after = await send(client, tenant, sms(2))
    assert after["billing"]["unit_price"] == "0.69"  # the step stays; only the pin is gone
    shown = await tier(client, tenant)
    assert (shown["qualification_source"], shown["pinned_until"]) == ("retained", None)


async def test_operator_routes_and_errors(client, new_tenant, state):
    tenant = await new_tenant()
    listed = await client.get(f"/v1/admin/organizations/{tenant.org_id}/tiers", headers=ADMIN)
    assert sorted(t["channel"] for t in listed.json()["tiers"]) == ["email", "rcs", "sms"]
    missing = "00000000-0000-0000-0000-000000000000"
    assert (await client.get(f"/v1/admin/organizations/{missing}/tiers", headers=ADMIN)).status_code == 404
    both = await client.get("/v1/billing/tier", headers=tenant.headers)
    assert sorted(t["channel"] for t in both.json()["tiers"]) == ["email", "rcs", "sms"]
    call = await client.get("/v1/billing/tier", params={"channel": "call"}, headers=tenant.headers)
    assert call.status_code == 400 and call.json()["error"] == "untiered_channel"
    assert (await client.get("/v1/billing/tier")).status_code == 401


async def test_a_failed_reserved_send_gives_its_units_back(client, new_tenant, state):
    tenant = await new_tenant(balance=100_000)
    await send(client, tenant, sms(1, 9_990))
    held = await send(client, tenant, sms(2, 5, reserve=True))
    assert (await tier(client, tenant))["volume_used"] == 9_995
    settled = await client.post(
        f"/v1/usage/{held['usage_id']}/settle", json={"outcome": "failed"}, headers=tenant.headers
    )
    assert settled.status_code == 200, settled.text
    assert (await tier(client, tenant))["volume_used"] == 9_990
    partial = await send(client, tenant, sms(3, 8, reserve=True))
    await client.post(
        f"/v1/usage/{partial['usage_id']}/settle",
        json={"outcome": "delivered", "quantity": 3},
        headers=tenant.headers,
    )
    assert (await tier(client, tenant))["volume_used"] == 9_993
    assert await verify(state) == []


async def test_a_disabled_plugin_leaves_the_channel_prices_in_force(make_state, database_url):
    app = make_state({"plugins": {"tiers": {"enabled": False}}})
    async with open_client(app) as client:
        created = await client.post("/v1/admin/organizations", json={"name": "Off"}, headers=ADMIN)
        tenant_headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
        org = created.json()["id"]
        await client.post(
            f"/v1/admin/organizations/{org}/adjustments",
            json={"amount_cents": 100_000, "description": "credit"},
            headers=ADMIN,
        )
        for n, quantity in enumerate((10_000, 1)):
            response = await client.post("/v1/usage", json=sms(n, quantity), headers=tenant_headers)
            assert response.status_code == 201, response.text
            assert (response.json()["billing"]["unit_price"], response.json()["billing"]["tier"]) == (
                "0.79",
                None,
            )
        assert (await client.get("/v1/billing/tier", headers=tenant_headers)).status_code == 404
        pin = f"/v1/admin/organizations/{org}/tiers/sms/pin"
        assert (await client.put(pin, json={"step": "growth"}, headers=ADMIN)).status_code == 404
    await app.engine.dispose()


async def test_the_cli_shows_an_organization_s_tiers(client, new_tenant, state, database_url):
    tenant = await new_tenant(balance=100_000)
    await send(client, tenant, sms(1, 10_000))
    shown = await asyncio.to_thread(
        run_cli, "tiers", "show", "--org", tenant.org_id, database_url=database_url
    )
    assert shown.returncode == 0, shown.stderr
    assert "sms: growth (volume), 10000 units" in shown.stdout
    as_json = await asyncio.to_thread(
        run_cli, "tiers", "show", "--org", tenant.org_id, "--json", database_url=database_url
    )
    assert json.loads(as_json.stdout)["tiers"][0]["next_threshold"] == 100_000


@pytest.mark.postgres
async def test_two_hundred_concurrent_events_across_a_threshold_are_priced_one_after_another(
    client, new_tenant, state, is_postgres
):
    if not is_postgres:
        pytest.skip("concurrency on PostgreSQL")
    tenant = await new_tenant(balance=1_000_000)
    await send(client, tenant, sms("start", 9_900))
    responses = await asyncio.gather(
        *(client.post("/v1/usage", json=sms(f"race-{n}"), headers=tenant.headers) for n in range(200))
    )
    assert [r.status_code for r in responses] == [201] * 200
    prices = Counter(r.json()["billing"]["unit_price"] for r in responses)
    assert prices == {"0.79": 100, "0.69": 100}
    assert (await tier(client, tenant))["volume_used"] == 10_100
    # the carried fraction saw them one after another: round(10,000 x 0.79 + 100 x 0.69)
    assert (await minor_balance(client, tenant.headers))["free"] == 1_000_000 - 7969
    assert len(await tier_events(state)) == 1
    assert await verify(state) == []


def test_a_bad_ladder_is_refused_with_its_key_path_and_line(make_state):
    steps = [
        {"name": "growth", "threshold": 500, "price": 1},
        {"name": "scale", "threshold": 100, "price": 1},
    ]
    with pytest.raises(ConfigError) as refused:
        make_state({"plugins": {"tiers": {"channels": {"sms": {"steps": steps}}}}})
    assert refused.value.key_path == "plugins.tiers.channels.sms"
    assert refused.value.line is not None and "thresholds must increase" in str(refused.value)


async def test_a_step_must_price_every_message_type_of_its_channel(make_state):
    ladder = {"steps": [{"name": "growth", "threshold": 10, "message_types": {"basic": 1}}]}
    app = make_state({"plugins": {"tiers": {"channels": {"rcs": ladder}}}})
    with pytest.raises(
        StartupError,
        match=r"plugins.tiers.channels.rcs.steps\[0\]: no price for message type '(single|conversation|mau)'",
    ):
        async with open_client(app):
            pass
    await app.engine.dispose()
