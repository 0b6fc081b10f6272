"""The two ways a charge reaches the ledger, and that they agree.

Without an Idempotency-Key, and while no plugin must run inside every debit, a charge on
PostgreSQL is one self-committing statement (UPDATE of the account + INSERT of the entry): the
row lock is held only while PostgreSQL runs it. Everything else — an Idempotency-Key, a debit that
would leave the balance below a watched level, a refusal for funds, a plugin implementing
billfold_authorize_debit or billfold_ledger_entry_written, and SQLite — goes through an explicit
transaction with the hooks inside it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from billfold import hookimpl
from billfold.plugins import create_plugin_manager
from conftest import assert_error, open_client, verify


class LowBalanceWatcher:
    """A plugin that only cares about balances under 300: it must not cost other debits anything."""

    __test__ = False

    def __init__(self) -> None:
        self.below: list[tuple[int, bool, int]] = []

    @hookimpl
    def billfold_balance_watermarks(self, org_id: Any) -> int:
        return 300

    @hookimpl
    async def billfold_balance_below_watermark(self, conn: Any, entry: Any, account: Any) -> None:
        # the entry is visible through the connection: we are inside its transaction
        seen = await conn.exec_driver_sql(f"SELECT count(*) FROM ledger_entries WHERE id = {int(entry.id)}")
        self.below.append((account.free_cents, conn.in_transaction(), seen.scalar_one()))


class EveryEntryWatcher:
    __test__ = False

    def __init__(self) -> None:
        self.seen: list[int] = []

    @hookimpl
    def billfold_ledger_entry_written(self, entry: Any) -> None:
        self.seen.append(entry.amount_cents)


class Statements:
    """Every statement the app sends, with the isolation level of the connection it used."""

    def __init__(self, engine: Any) -> None:
        self.seen: list[tuple[str, str | None]] = []
        event.listen(engine.sync_engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        words = " ".join(statement.split()[:3]).upper()
        if "API_KEYS" in words:
            return  # the key lookup (the tests run without the key cache)
        self.seen.append((words, conn.get_execution_options().get("isolation_level")))

    def take(self) -> list[tuple[str, str | None]]:
        seen, self.seen = self.seen, []
        return seen


ALONE = ("WITH ACCOUNT AS", "AUTOCOMMIT")


@pytest.fixture
def watcher() -> LowBalanceWatcher:
    return LowBalanceWatcher()


@pytest.fixture
async def state(make_state, watcher):
    pm = create_plugin_manager()
    pm.register(watcher, name="low-balance-watcher")
    app_state = make_state(pm=pm)
    yield app_state
    await app_state.close()


async def _charge(client, tenant, amount: int, **headers: str):
    return await client.post(
        "/v1/billing/charges", json={"amount_cents": amount}, headers={**tenant.headers, **headers}
    )


async def test_a_charge_above_every_watched_level_is_one_self_committing_statement(
    client, new_tenant, state, watcher, is_postgres
):
    tenant = await new_tenant(balance=1000)
    assert not state.ledger.debits_need_transaction()
    statements = Statements(state.engine)

    charged = await _charge(client, tenant, 600)
    assert charged.status_code == 201, charged.text
    assert charged.json()["balance"]["free"] == 400
    sent = statements.take()
    if is_postgres:
        assert sent == [ALONE]
    else:
        assert ALONE not in sent and sent  # SQLite: the portable transaction
    assert watcher.below == []
    assert await verify(state) == []


async def test_crossing_a_watched_level_redoes_the_charge_in_a_transaction_with_the_hook(
    client, new_tenant, state, watcher, is_postgres
):
    tenant = await new_tenant(balance=1000)
    await _charge(client, tenant, 600)
    statements = Statements(state.engine)

    charged = await _charge(client, tenant, 200)
    assert charged.status_code == 201, charged.text
    assert charged.json()["balance"]["free"] == 200
    assert watcher.below == [(200, True, 1)]
    sent = statements.take()
    if is_postgres:
        assert sent[0] == ALONE  # refused by the watermark, nothing written...
        assert all(level is None for _, level in sent[1:])  # ...then the transaction
    assert [e["amount_cents"] for e in await _entries(client, tenant)] == [1000, -600, -200]
    assert await verify(state) == []


async def test_a_refusal_for_funds_is_the_same_402_and_writes_nothing(
    client, new_tenant, state, watcher, is_postgres
):
    tenant = await new_tenant(balance=500)
    body = assert_error(await _charge(client, tenant, 501), 402, "insufficient_funds")
    assert body["error"]["code"] == "insufficient_funds"
    assert [e["amount_cents"] for e in await _entries(client, tenant)] == [500]
    assert (await client.get("/v1/billing/balance", headers=tenant.headers)).json()["free"] == 500
    assert watcher.below == []
    assert await verify(state) == []


async def test_an_idempotency_key_always_takes_the_transaction(client, new_tenant, state, is_postgres):
    tenant = await new_tenant(balance=1000)
    statements = Statements(state.engine)
    first = await _charge(client, tenant, 100, **{"Idempotency-Key": "k1"})
    again = await _charge(client, tenant, 100, **{"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert ALONE not in statements.take()
    assert (await client.get("/v1/billing/balance", headers=tenant.headers)).json()["free"] == 900


async def test_a_plugin_on_every_entry_keeps_every_debit_in_a_transaction(make_state, is_postgres):
    every = EveryEntryWatcher()
    pm = create_plugin_manager()
    pm.register(every, name="every-entry")
    state = make_state(pm=pm)
    try:
        assert state.ledger.debits_need_transaction()
        async with open_client(state) as client:
            from conftest import ADMIN

            created = (
                await client.post("/v1/admin/organizations", json={"name": "Audited"}, headers=ADMIN)
            ).json()
            headers = {"Authorization": f"Bearer {created['api_key']}"}
            await client.post(
                f"/v1/admin/organizations/{created['id']}/adjustments",
                json={"amount_cents": 1000, "description": "opening"},
                headers=ADMIN,
            )
            statements = Statements(state.engine)
            charged = await client.post("/v1/billing/charges", json={"amount_cents": 10}, headers=headers)
            assert charged.status_code == 201, charged.text
            assert ALONE not in statements.take()
            assert every.seen == [1000, -10]
    finally:
        await state.close()


async def _entries(client, tenant) -> list[dict[str, Any]]:
    page = await client.get("/v1/billing/transactions", params={"limit": 200}, headers=tenant.headers)
    assert page.status_code == 200, page.text
    return list(page.json()["data"])
