"""The two ways a charge reaches the ledger, and that they agree.

Without an Idempotency-Key, and while no plugin must run inside every debit, a charge on
PostgreSQL is one self-committing statement (UPDATE of the account + INSERT of the entry): the
row lock is held only while PostgreSQL runs it. Everything else — an Idempotency-Key, a debit that
would leave the balance below a watched level, a refusal for funds, a plugin implementing
billfold_authorize_debit or billfold_ledger_entry_written, and SQLite — goes through an explicit
transaction with the hooks inside it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event

from billfold import hookimpl
from billfold.plugins import create_plugin_manager
from conftest import ADMIN, assert_error, minor_balance, open_client, verify


class LowBalanceWatcher:
    """A plugin that only cares about balances under 300: it must not cost other debits anything."""

    __test__ = False

    def __init__(self) -> None:
        self.below: list[tuple[int, bool, int]] = []

    @hookimpl
    def billfold_balance_levels(self, org_id: Any) -> int:
        return 300

    @hookimpl
    async def billfold_balance_crossed(self, conn: Any, entry: Any, account: Any, direction: Any) -> None:
        if direction != "down":
            return
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
    """What the app sends to the database: through SQLAlchemy (``via_sqlalchemy``), and on
    PostgreSQL everything asyncpg itself logs on the pool's connections (``on_the_wire``: simple
    queries such as BEGIN and COMMIT, and statements run on the driver connection directly)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.via_sqlalchemy: list[str] = []
        self.on_the_wire: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute", self._record)
        if engine.dialect.name == "postgresql":
            event.listen(engine.sync_engine, "connect", self._log_driver)

    async def start(self) -> Statements:
        await self.engine.dispose()  # new connections, each with the query logger
        return self

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.via_sqlalchemy.append(_words(statement))

    def _log_driver(self, _dbapi: Any, record: Any) -> None:
        record.driver_connection.add_query_logger(
            lambda logged: self.on_the_wire.append(_words(logged.query))
        )

    async def take(self) -> tuple[list[str], list[str]]:
        await asyncio.sleep(0.05)  # asyncpg calls its query loggers with call_soon
        taken = (self.via_sqlalchemy, self.on_the_wire)
        self.via_sqlalchemy, self.on_the_wire = [], []
        return taken


def _words(statement: str) -> str:
    return " ".join(statement.split()[:3]).upper()


ALONE = "WITH ACCOUNT AS"


@pytest.fixture
def watcher() -> LowBalanceWatcher:
    return LowBalanceWatcher()


@pytest.fixture
async def state(make_state, watcher):
    pm = create_plugin_manager()
    pm.register(watcher, name="low-balance-watcher")
    # keys stay cached, so a request's statements are the charge's alone
    app_state = make_state({"auth": {"key_cache_seconds": 300}}, pm=pm)
    yield app_state
    await app_state.close()


async def _warm(client, tenant) -> None:
    assert (await client.get("/v1/billing/balance", headers=tenant.headers)).status_code == 200


async def _charge(client, tenant, amount: int, **headers: str):
    return await client.post(
        "/v1/billing/charges", json={"amount_cents": amount}, headers={**tenant.headers, **headers}
    )


async def test_a_charge_above_every_watched_level_is_one_self_committing_statement(
    client, new_tenant, state, watcher, is_postgres
):
    tenant = await new_tenant(balance=1000)
    assert not state.ledger.debits_need_transaction()
    await _warm(client, tenant)
    statements = await Statements(state.engine).start()

    charged = await _charge(client, tenant, 600)
    assert charged.status_code == 201, charged.text
    assert charged.json()["balance"]["free"] == 400
    via_sqlalchemy, on_the_wire = await statements.take()
    if is_postgres:
        assert on_the_wire == [ALONE]  # no BEGIN, no COMMIT: the statement commits by itself
        assert via_sqlalchemy == []
    else:
        assert via_sqlalchemy[:3] == [
            "BEGIN IMMEDIATE",
            "UPDATE LEDGER_ACCOUNTS SET",
            "INSERT INTO LEDGER_ENTRIES",
        ]
    assert watcher.below == []
    assert await verify(state) == []


async def test_crossing_a_watched_level_redoes_the_charge_in_a_transaction_with_the_hook(
    client, new_tenant, state, watcher, is_postgres
):
    tenant = await new_tenant(balance=1000)
    await _charge(client, tenant, 600)
    await _warm(client, tenant)
    statements = await Statements(state.engine).start()

    charged = await _charge(client, tenant, 200)
    assert charged.status_code == 201, charged.text
    assert charged.json()["balance"]["free"] == 200
    assert watcher.below == [(200, True, 1)]
    via_sqlalchemy, on_the_wire = await statements.take()
    if is_postgres:
        # refused by the watermark, nothing written; then the transaction with the hook inside
        assert on_the_wire[0] == ALONE
        assert on_the_wire[1].startswith("BEGIN") and on_the_wire[-1] == "COMMIT;"
        assert via_sqlalchemy[0] == ALONE
    assert [e["amount_cents"] for e in await _entries(client, tenant)] == [1000, -600, -200]
    assert await verify(state) == []


async def test_a_refusal_for_funds_is_the_same_402_and_writes_nothing(
    client, new_tenant, state, watcher, is_postgres
):
    tenant = await new_tenant(balance=500)
    body = assert_error(await _charge(client, tenant, 501), 402, "insufficient_funds")
    assert body["error"]["code"] == "insufficient_funds"
    assert [e["amount_cents"] for e in await _entries(client, tenant)] == [500]
    assert (await minor_balance(client, tenant.headers))["free"] == 500
    assert watcher.below == []
    assert await verify(state) == []


async def test_an_idempotency_key_always_takes_the_transaction(client, new_tenant, state, is_postgres):
    tenant = await new_tenant(balance=1000)
    await _warm(client, tenant)
    statements = await Statements(state.engine).start()
    first = await _charge(client, tenant, 100, **{"Idempotency-Key": "k1"})
    again = await _charge(client, tenant, 100, **{"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    via_sqlalchemy, on_the_wire = await statements.take()
    assert ALONE not in on_the_wire
    if is_postgres:
        assert on_the_wire.count("COMMIT;") == 2 and via_sqlalchemy.count(ALONE) == 1
    assert (await minor_balance(client, tenant.headers))["free"] == 900


async def test_a_plugin_on_every_entry_keeps_every_debit_in_a_transaction(make_state, is_postgres):
    every = EveryEntryWatcher()
    pm = create_plugin_manager()
    pm.register(every, name="every-entry")
    state = make_state({"auth": {"key_cache_seconds": 300}}, pm=pm)
    try:
        assert state.ledger.debits_need_transaction()
        async with open_client(state) as client:
            created = (
                await client.post("/v1/admin/organizations", json={"name": "Audited"}, headers=ADMIN)
            ).json()
            headers = {"Authorization": f"Bearer {created['api_key']}"}
            await client.post(
                f"/v1/admin/organizations/{created['id']}/adjustments",
                json={"amount_cents": 1000, "description": "opening"},
                headers=ADMIN,
            )
            assert (await client.get("/v1/billing/balance", headers=headers)).status_code == 200
            statements = await Statements(state.engine).start()
            charged = await client.post("/v1/billing/charges", json={"amount_cents": 10}, headers=headers)
            assert charged.status_code == 201, charged.text
            via_sqlalchemy, on_the_wire = await statements.take()
            assert ALONE not in on_the_wire
            if is_postgres:
                assert via_sqlalchemy == [ALONE] and on_the_wire[-1] == "COMMIT;"
            assert every.seen == [1000, -10]
    finally:
        await state.close()


async def _entries(client, tenant) -> list[dict[str, Any]]:
    page = await client.get("/v1/billing/transactions", params={"limit": 200}, headers=tenant.headers)
    assert page.status_code == 200, page.text
    return list(page.json()["data"])


async def test_a_charge_cancelled_while_waiting_for_the_row_leaves_the_ledger_whole(
    client, new_tenant, state, is_postgres
):
    """A client that goes away mid-statement (the request task is cancelled while PostgreSQL waits
    for the account row): the statement either committed whole or not at all, and the pool's
    connection that was interrupted is not handed out again half-used."""
    if not is_postgres:
        pytest.skip("the single-statement path is PostgreSQL's")
    tenant = await new_tenant(balance=1000)
    await _warm(client, tenant)
    blocker = await state.engine.connect()
    await blocker.exec_driver_sql(
        f"SELECT 1 FROM ledger_accounts WHERE org_id = '{tenant.org_id}' FOR UPDATE"
    )  # holds the row lock until rollback
    waiting = asyncio.create_task(_charge(client, tenant, 100))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # blocked on the row
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await blocker.rollback()
    await blocker.close()

    for _ in range(25):  # more charges than the pool has connections: every one of them works
        assert (await _charge(client, tenant, 10)).status_code == 201
    entries = [e["amount_cents"] for e in await _entries(client, tenant)]
    free = (await minor_balance(client, tenant.headers))["free"]
    assert free == sum(entries) and free in (750, 650)  # the cancelled 100 counted once or not at all
    assert await verify(state) == []
