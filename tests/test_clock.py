"""The business clock: entries, payments and events carry billfold.now(); outside production
BILLFOLD_NOW starts it and POST /v1/admin/clock advances it, and the server, the worker and the CLI
agree because the offset lives in the database. Leases, hold timers and signatures keep real time."""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import pytest
from sqlalchemy import text

from billfold import hookimpl
from billfold.errors import StartupError
from billfold.payments.local import LocalProvider
from billfold.plugins import create_plugin_manager
from conftest import ADMIN, assert_error, open_client, run_cli, verify

START = "2026-01-31T23:59:00+00:00"
STARTED = datetime.datetime.fromisoformat(START)
DAY = 86400


def _near(value: str | datetime.datetime, expected: datetime.datetime, seconds: float = 120) -> bool:
    moment = (
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return abs((moment - expected).total_seconds()) < seconds


async def _entries(state: Any) -> list[tuple[str, str, datetime.datetime]]:
    async with state.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT kind, description, created_at FROM ledger_entries ORDER BY id")
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def test_server_worker_and_cli_share_the_business_time(make_state, monkeypatch, database_url):
    monkeypatch.setenv("BILLFOLD_NOW", START)
    state = make_state()
    async with open_client(state) as client:
        created = (
            await client.post("/v1/admin/organizations", json={"name": "Clocked"}, headers=ADMIN)
        ).json()
        org, headers = created["id"], {"Authorization": f"Bearer {created['api_key']}"}
        adjusted = await client.post(
            f"/v1/admin/organizations/{org}/adjustments",
            json={"amount_cents": 5000, "description": "opening"},
            headers=ADMIN,
        )
        assert _near(adjusted.json()["transaction"]["created_at"], STARTED)

        advanced = await client.post("/v1/admin/clock", json={"seconds": 31 * DAY}, headers=ADMIN)
        assert advanced.status_code == 200, advanced.text
        later = STARTED + datetime.timedelta(days=31)
        assert _near(advanced.json()["now"], later)
        assert _near((await client.get("/v1/admin/clock", headers=ADMIN)).json()["now"], later)
        charged = await client.post("/v1/billing/charges", json={"amount_cents": 100}, headers=headers)
        assert _near(charged.json()["transaction"]["created_at"], later)

        # a hold that expires (real time, one second) is released by a separate worker process,
        # whose release entry carries the business time it read from the database
        held = await client.post(
            "/v1/billing/holds", json={"amount_cents": 200, "expires_in_seconds": 1}, headers=headers
        )
        assert held.status_code == 201, held.text
        real_expiry = datetime.datetime.fromisoformat(
            held.json()["hold"]["expires_at"].replace("Z", "+00:00")
        )
        assert _near(real_expiry, datetime.datetime.now(datetime.UTC), 5)  # a real-time timer
        await asyncio.sleep(1.2)
        worker = await asyncio.to_thread(
            run_cli, "worker", "--once", database_url=database_url, env={"BILLFOLD_NOW": START}
        )
        assert worker.returncode == 0, worker.stderr

        # the CLI, started with the same BILLFOLD_NOW, keeps the advanced offset (not reset to START)
        cli = await asyncio.to_thread(
            run_cli,
            "ledger",
            "adjust",
            "--org",
            org,
            "--amount-cents",
            "7",
            "--description",
            "from the cli",
            "--json",
            database_url=database_url,
            env={"BILLFOLD_NOW": START},
        )
        assert cli.returncode == 0, cli.stderr
        shown = await asyncio.to_thread(run_cli, "clock", "show", database_url=database_url)
        assert _near(shown.stdout.strip(), later)

    entries = await _entries(state)
    by_description = {description: created_at for _kind, description, created_at in entries}
    assert _near(by_description["opening"], STARTED)
    assert _near(by_description["Hold expired"], later)
    assert _near(by_description["from the cli"], later)
    assert [kind for kind, _d, _t in entries] == ["adjustment", "debit", "hold", "release", "adjustment"]
    assert await verify(state) == []


async def test_the_clock_only_moves_forward_and_is_an_operator_route(client, tenant):
    assert_error(await client.post("/v1/admin/clock", json={"seconds": 60}, headers=tenant.headers), 401)
    assert_error(
        await client.post("/v1/admin/clock", json={"seconds": -1}, headers=ADMIN), 400, field="seconds"
    )
    before = (await client.get("/v1/admin/clock", headers=ADMIN)).json()
    moved = (await client.post("/v1/admin/clock", json={"seconds": 3600}, headers=ADMIN)).json()
    assert moved["offset_seconds"] == pytest.approx(before["offset_seconds"] + 3600, abs=1)


async def test_leases_and_signatures_keep_real_time(client, state, new_tenant):
    """A year ahead in business time, the worker still leases and delivers events by the real clock
    (an event is due at once, not a year late), and Stripe signatures made now verify."""
    tenant = await new_tenant(balance=1000)
    await client.post("/v1/admin/clock", json={"seconds": 365 * DAY}, headers=ADMIN)
    delivered: list[int] = []

    class Listener:
        @hookimpl
        def billfold_event_handlers(self) -> dict[str, Any]:
            async def handle(event: Any) -> None:
                delivered.append(event.id)

            return {"clock.test": handle}

    state.pm.register(Listener(), name="listener")
    try:
        async with state.db.transaction() as conn:
            from billfold import emit

            event = await emit(conn, "clock.test", {}, org_id=None)
        assert _near(event.created_at, datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365))
        await state.worker.load_handlers()
        await state.worker.drain()
        assert delivered == [event.id]
    finally:
        state.pm.unregister(name="listener")

    from billfold_stripe.config import StripeConfig
    from billfold_stripe.provider import StripeProvider
    from stripe_support import sign

    provider = StripeProvider(StripeConfig(enabled=True, secret_key="sk_test_x", webhook_secret="whsec_test"))
    payload = json.dumps({"id": "evt_1", "type": "ping", "object": "event", "data": {"object": {}}}).encode()
    parsed = provider.parse_webhook(payload, {"stripe-signature": sign(payload, "whsec_test")})
    assert parsed.id == "evt_1"
    await provider.close()
    assert tenant.org_id


class OtherProvider(LocalProvider):
    name = "test"


class OtherProviderPlugin:
    @hookimpl(tryfirst=True)
    def billfold_payment_provider(self) -> OtherProvider:
        return OtherProvider()


async def test_production_refuses_billfold_now_and_has_no_clock_route(make_state, monkeypatch):
    pm = create_plugin_manager()
    pm.register(OtherProviderPlugin(), name="test-provider")
    monkeypatch.setenv("BILLFOLD_NOW", START)
    refused = make_state({"environment": "production"}, pm=pm)
    with pytest.raises(StartupError, match="BILLFOLD_NOW"):
        async with open_client(refused):
            pass
    monkeypatch.delenv("BILLFOLD_NOW")
    pm = create_plugin_manager()
    pm.register(OtherProviderPlugin(), name="test-provider")
    production = make_state({"environment": "production"}, pm=pm)
    async with open_client(production) as client:
        assert_error(await client.post("/v1/admin/clock", json={"seconds": 60}, headers=ADMIN), 404)
