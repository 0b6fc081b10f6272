"""The hooks added to the plugin contract, each exercised by a throwaway plugin: domain events inside
the writing transaction, balance crossings on every kind of write, pricing (firstresult, async
implementations may pass), month close, periodic worker tasks, handler-chosen retry delays, and
provider webhooks (once per event id)."""

from __future__ import annotations

import asyncio
import datetime
import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from billfold import PriceQuote, RetryLater, WorkerTask, emit, hookimpl, now
from billfold.db import utcnow
from billfold.payments.provider import Intent
from billfold.plugins import create_plugin_manager
from conftest import ADMIN, assert_error, count_rows, minor_balance, open_client, verify
from test_payments_local import WebhookLocalProvider


class Recorder:
    """Implements the new hooks; records what it sees."""

    __test__ = False

    def __init__(self) -> None:
        self.events: list[tuple[str, bool]] = []
        self.crossed: list[tuple[str, list[int], str, int]] = []
        self.closed: list[tuple[str, str, bool]] = []
        self.webhooks: list[str] = []
        self.ticks = 0
        self.delivered: list[int] = []
        self.retry_after: float | None = None
        self.explode_on: str | None = None

    @hookimpl
    async def billfold_domain_event(self, conn: Any, event: Any) -> None:
        self.events.append((event.type, conn.in_transaction()))
        if event.type == self.explode_on:
            raise RuntimeError("the reaction failed")

    @hookimpl
    def billfold_balance_levels(self) -> list[int]:
        return [1000, 500]

    @hookimpl
    def billfold_balance_crossed(self, entry: Any, account: Any, levels: list[int], direction: str) -> None:
        self.crossed.append((entry.kind, levels, direction, account.free_cents))

    @hookimpl
    async def billfold_price_usage(self, channel: str, quantity: int) -> PriceQuote | None:
        if channel != "sms":
            return None  # an async implementation that passes lets the next one answer
        return PriceQuote(
            unit_price=Decimal("0.5"), tier={"channel": "sms", "current": "bulk", "volume_used": quantity}
        )

    @hookimpl
    async def billfold_month_close(self, conn: Any, org_id: Any, period: str) -> None:
        self.closed.append((str(org_id), period, conn.in_transaction()))

    @hookimpl
    def billfold_worker_tasks(self, state: Any) -> list[WorkerTask]:
        async def tick() -> None:
            self.ticks += 1

        return [WorkerTask(name="tick", interval_seconds=0.05, run=tick)]

    @hookimpl
    def billfold_event_handlers(self) -> dict[str, Any]:
        async def handle(event: Any) -> None:
            if self.retry_after is not None:
                raise RetryLater(self.retry_after, "come back later")
            self.delivered.append(event.id)

        return {"hooks.test": handle}

    @hookimpl
    def billfold_provider_webhook(self, event: Any) -> None:
        self.webhooks.append(event.id)


class FlatSms:
    @hookimpl(trylast=True)
    def billfold_price_usage(self, channel: str) -> PriceQuote:
        return PriceQuote(unit_price=Decimal("0.79"))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def state(make_state, recorder):
    pm = create_plugin_manager()
    pm.register(recorder, name="recorder")
    pm.register(FlatSms(), name="flat")
    # the recorder and the flat price alone: the shipped tiers would price sms first
    app = make_state({"plugins": {"tiers": {"enabled": False}}}, pm=pm)
    yield app
    await app.close()


async def test_domain_events_reach_plugins_inside_the_writing_transaction(
    client, state, recorder, new_tenant
):
    tenant = await new_tenant()
    await client.post(
        "/v1/billing/default-payment-method",
        json={"payment_method_id": "pm_card_visa"},
        headers=tenant.headers,
    )
    topped = await client.post("/v1/billing/top-up", json={"amount_cents": 1500}, headers=tenant.headers)
    assert topped.status_code == 201, topped.text
    assert ("payment.succeeded", True) in recorder.events

    # a reaction that fails rolls the payment, its credit and its event back
    recorder.explode_on = "payment.succeeded"
    failed = await client.post("/v1/billing/top-up", json={"amount_cents": 2000}, headers=tenant.headers)
    assert_error(failed, 500, "internal_error")
    assert (await minor_balance(client, tenant.headers))["free"] == 1500
    async with state.engine.connect() as conn:
        succeeded = await conn.execute(
            text("SELECT count(*) FROM outbox_events WHERE type = 'payment.succeeded'")
        )
        assert succeeded.scalar_one() == 1
    assert await verify(state) == []


async def test_every_kind_of_write_reports_the_levels_it_crosses(client, state, recorder, new_tenant):
    tenant = await new_tenant(balance=1200)  # an up-crossing of 500 and 1000 from 0
    assert recorder.crossed == [("adjustment", [1000, 500], "up", 1200)]
    held = await client.post("/v1/billing/holds", json={"amount_cents": 300}, headers=tenant.headers)
    assert recorder.crossed[-1] == ("hold", [1000], "down", 900)
    await client.post(f"/v1/billing/holds/{held.json()['hold']['id']}/release", headers=tenant.headers)
    assert recorder.crossed[-1] == ("release", [1000], "up", 1200)
    await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/refunds",
        json={"amount_cents": 800, "description": "refund"},
        headers=ADMIN,
    )
    assert recorder.crossed[-1] == ("refund", [1000, 500], "down", 400)
    count = len(recorder.crossed)
    await client.post("/v1/billing/charges", json={"amount_cents": 100}, headers=tenant.headers)
    assert len(recorder.crossed) == count  # 400 → 300 crosses nothing
    short = await client.post(
        "/v1/billing/holds", json={"amount_cents": 250, "expires_in_seconds": 1}, headers=tenant.headers
    )
    assert short.status_code == 201
    await asyncio.sleep(1.1)
    await state.worker.drain()  # the expiry returns the money: 50 → 300, no level
    assert len(recorder.crossed) == count
    await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": 250, "description": "back"},
        headers=ADMIN,
    )
    assert recorder.crossed[-1] == ("adjustment", [500], "up", 550)
    assert await verify(state) == []


async def test_pricing_takes_the_first_answer_and_async_passes_fall_through(state, new_tenant):
    async with state.db.transaction() as conn:
        quote = await state.hooks.first(
            "billfold_price_usage",
            conn=conn,
            org_id=None,
            channel="sms",
            message_type=None,
            quantity=3,
            currency="usd",
            at=now(),
        )
        assert quote == PriceQuote(
            unit_price=Decimal("0.5"), tier={"channel": "sms", "current": "bulk", "volume_used": 3}
        )
        fallback = await state.hooks.first(
            "billfold_price_usage",
            conn=conn,
            org_id=None,
            channel="email",
            message_type=None,
            quantity=3,
            currency="usd",
            at=now(),
        )
        assert fallback == PriceQuote(unit_price=Decimal("0.79"))


async def test_month_close_is_called_in_a_transaction(state, recorder):
    async with state.db.transaction() as conn:
        await state.hooks.call("billfold_month_close", conn=conn, org_id="org", period="2026-11")
    assert recorder.closed == [("org", "2026-11", True)]


async def test_worker_tasks_run_on_their_interval(state, recorder):
    await state.worker.load_handlers()
    assert "tick" in [t.name for t in state.worker.tasks]
    state.worker.start()
    await asyncio.sleep(0.3)
    await state.worker.stop()
    assert recorder.ticks >= 3
    ticks = recorder.ticks
    await asyncio.sleep(0.1)
    assert recorder.ticks == ticks  # stopped with the worker


async def test_a_handler_chooses_its_retry_delay(client, state, recorder):
    async with state.db.transaction() as conn:
        event = await emit(conn, "hooks.test", {"n": 1})
    await state.worker.load_handlers()
    recorder.retry_after = 120
    before = utcnow()
    await state.worker.run_once()
    async with state.engine.connect() as conn:
        row = (
            await conn.execute(
                text(f"SELECT attempts, available_at, last_error FROM outbox_events WHERE id = {event.id}")
            )
        ).one()
    assert row[0] == 1 and row[2] == "come back later"
    available = (
        row[1] if isinstance(row[1], datetime.datetime) else datetime.datetime.fromisoformat(str(row[1]))
    )
    if available.tzinfo is None:
        available = available.replace(tzinfo=datetime.UTC)
    assert 110 < (available - before).total_seconds() < 130
    assert recorder.delivered == []


class WebhookPlugin:
    def __init__(self) -> None:
        self.provider = WebhookLocalProvider()

    @hookimpl(tryfirst=True)
    def billfold_payment_provider(self) -> WebhookLocalProvider:
        return self.provider


async def test_provider_webhooks_reach_plugins_once_per_event(make_state, recorder, new_tenant):
    pm = create_plugin_manager()
    pm.register(recorder, name="recorder")
    pm.register(WebhookPlugin(), name="webhook-test")
    state = make_state(pm=pm)
    async with open_client(state) as client:
        created = (await client.post("/v1/admin/organizations", json={"name": "W"}, headers=ADMIN)).json()
        intent = Intent(
            id="pi_hooks_1",
            status="succeeded",
            amount_cents=900,
            currency="usd",
            metadata={"org_id": created["id"], "purpose": "top_up"},
        )
        body = json.dumps(
            {
                "id": "evt_hooks_1",
                "type": "payment_intent.succeeded",
                "intent": {
                    "id": intent.id,
                    "status": intent.status,
                    "amount_cents": 900,
                    "currency": "usd",
                    "metadata": intent.metadata,
                },
            }
        ).encode()
        signed = {"x-test-signature": "ok", "content-type": "application/json"}
        for _ in range(3):
            answered = await client.post("/v1/webhooks/stripe", content=body, headers=signed)
            assert answered.status_code == 200, answered.text
        assert recorder.webhooks == ["evt_hooks_1"]
        assert await count_rows(state, "payments") == 1
    await state.close()
