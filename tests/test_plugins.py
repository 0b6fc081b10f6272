"""Plugin hooks, exercised by a throwaway plugin: its config section is validated with its own
schema (errors at the YAML key), it mounts routes, it can refuse debits (402 with its code), and
it reacts to ledger entries inside the writing transaction (its writes commit or roll back with
the entry; its failure rolls the entry back)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest
from litestar import get
from sqlalchemy import select, text

from billfold import hookimpl
from billfold.config import ConfigError
from billfold.errors import PaymentRequired, StartupError
from billfold.events.models import OutboxEvent
from billfold.events.outbox import emit
from billfold.ledger.models import Entry
from billfold.plugins import create_plugin_manager
from conftest import ADMIN, assert_error, config_text, count_rows, minor_balance, open_client, verify

EVENT = "testplugin.entry_written"


class TestPluginConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    x: int = 1
    greeting: str = "hello"
    cap_cents: int | None = None
    levels: tuple[int, ...] = ()


class ThrowawayPlugin:
    """Implements one hook of each kind; each takes only the arguments it needs."""

    __test__ = False

    def __init__(self) -> None:
        self.written: list[tuple[str, int, int, bool, int | None]] = []
        self.crossed: list[tuple[str, int, list[int], str, bool]] = []
        self.authorized: list[tuple[str, int]] = []
        self.delivered: list[dict[str, Any]] = []
        self.organizations: list[str] = []
        self.started = 0
        self.watermark: int | None = None
        self.cap_cents: int | None = None
        self.fail_startup = False

    @hookimpl
    def billfold_config_schema(self) -> tuple[str, type]:
        return ("testplugin", TestPluginConfig)

    @hookimpl
    def billfold_routes(self, state: Any) -> list[Any]:
        @get("/v1/testplugin/hello", sync_to_thread=False)
        def hello() -> dict[str, Any]:
            config = state.plugin_config("testplugin")
            return {"greeting": config.greeting, "x": config.x}

        return [hello]

    @hookimpl
    def billfold_startup(self, state: Any) -> None:
        self.started += 1
        if self.fail_startup:
            raise StartupError("testplugin: the frobnicator is not configured")

    @hookimpl
    def billfold_authorize_debit(self, org_id: Any, amount_cents: int, kind: str) -> None:
        self.authorized.append((kind, amount_cents))
        if self.cap_cents is not None and amount_cents > self.cap_cents:
            raise PaymentRequired("the monthly cap is reached", code="cap_reached", fix="Raise the cap.")

    @hookimpl
    async def billfold_ledger_entry_written(self, conn: Any, entry: Any, account: Any) -> None:
        # the entry is visible through the connection we are given: we are inside its transaction
        seen = (
            await conn.execute(select(Entry.__table__.c.id).where(Entry.__table__.c.id == entry.id))
        ).first()
        self.written.append(
            (
                entry.kind,
                entry.amount_cents,
                account.free_cents,
                seen is not None and conn.in_transaction(),
                account.watch_below_cents,
            )
        )
        await emit(conn, EVENT, {"entry_id": entry.id, "free_after": account.free_cents}, org_id=entry.org_id)
        if entry.description == "explode":
            raise RuntimeError("testplugin failed after writing its event")

    @hookimpl
    def billfold_balance_levels(self, org_id: Any) -> int | None:
        return self.watermark

    @hookimpl
    def billfold_balance_crossed(
        self, conn: Any, entry: Any, account: Any, levels: Any, direction: Any
    ) -> None:
        self.crossed.append((entry.kind, account.free_cents, levels, direction, conn.in_transaction()))

    @hookimpl
    def billfold_event_handlers(self, state: Any) -> dict[str, Any]:
        async def handle(event: Any) -> None:
            self.delivered.append({"id": event.id, "org_id": str(event.org_id), **event.payload})

        return {EVENT: handle}

    @hookimpl
    async def billfold_organization_created(self, conn: Any, org: Any) -> None:
        self.organizations.append(org.name)
        if org.name == "refused":
            raise PaymentRequired("no new organizations today", code="signup_closed")


@pytest.fixture
def plugin() -> ThrowawayPlugin:
    return ThrowawayPlugin()


@pytest.fixture
async def state(make_state, plugin):
    """This module's Billfold is built on a plugin manager with the throwaway plugin registered
    (as an installed plugin would be at start-up), so its config section is validated too."""
    pm = create_plugin_manager()
    pm.register(plugin, name="throwaway")
    app_state = make_state({"plugins": {"testplugin": {"x": 3}}}, pm=pm)
    yield app_state
    pm.unregister(plugin)
    await app_state.engine.dispose()


async def outbox_events(state) -> list[dict[str, Any]]:
    table = OutboxEvent.__table__
    async with state.engine.connect() as conn:
        rows = (
            await conn.execute(select(table.c.payload).where(table.c.type == EVENT).order_by(table.c.id))
        ).all()
    return [r.payload for r in rows]


# -- config section ----------------------------------------------------------------------------------


def _manager_with(plugin: ThrowawayPlugin):
    pm = create_plugin_manager()
    pm.register(plugin, name="throwaway")
    return pm


def _line_of(text_: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text_.splitlines(), start=1) if fragment in line)


async def test_config_section_is_converted_with_the_plugin_schema(make_state):
    state = make_state(
        {"plugins": {"testplugin": {"x": 7, "greeting": "bonjour"}}}, pm=_manager_with(ThrowawayPlugin())
    )
    assert state.plugin_config("testplugin") == TestPluginConfig(x=7, greeting="bonjour")
    async with open_client(state) as client:
        response = await client.get("/v1/testplugin/hello")
    assert response.status_code == 200, response.text
    assert response.json() == {"greeting": "bonjour", "x": 7}


async def test_absent_section_gets_the_schema_defaults(make_state):
    state = make_state(pm=_manager_with(ThrowawayPlugin()))
    assert state.plugin_config("testplugin") == TestPluginConfig()
    await state.engine.dispose()


@pytest.mark.parametrize(
    ("section", "path", "fragment"),
    [
        ({"x": "notanint"}, "plugins.testplugin.x", "x: notanint"),
        ({"x": 1, "colour": "red"}, "plugins.testplugin.colour", "colour: red"),
        ({"cap_cents": [1, 2]}, "plugins.testplugin.cap_cents", "cap_cents:"),
        ({"levels": [1000, "lots", 0]}, "plugins.testplugin.levels[1]", "- lots"),
    ],
    ids=["wrong-type", "unknown-key", "list-for-int", "wrong-type-in-a-list"],
)
def test_invalid_section_is_refused_at_its_key(make_state, database_url, section, path, fragment):
    with pytest.raises(ConfigError) as caught:
        make_state({"plugins": {"testplugin": section}}, pm=_manager_with(ThrowawayPlugin()))
    error = caught.value
    assert error.key_path == path
    dumped = config_text({"plugins": {"testplugin": section}}, database_url=database_url)
    assert error.line == _line_of(dumped, fragment)
    assert f"test.yaml:{error.line}" in str(error)


def test_section_of_a_plugin_that_is_not_installed_is_refused(make_state):
    with pytest.raises(ConfigError) as caught:
        make_state({"plugins": {"testplugin": {"x": 1}}})  # the plugin is not registered here
    assert caught.value.key_path == "plugins.testplugin"
    assert caught.value.line is not None


# -- routes, start-up, listing -------------------------------------------------------------------------


async def test_routes_are_mounted_with_the_error_envelope(client, plugin):
    response = await client.get("/v1/testplugin/hello")
    assert response.status_code == 200, response.text
    assert response.json() == {"greeting": "hello", "x": 3}
    assert_error(await client.post("/v1/testplugin/hello"), 405)


async def test_startup_hook_runs_once_and_can_refuse_to_start(state, plugin):
    async with open_client(state) as client:
        assert (await client.get("/health")).status_code == 200
        assert plugin.started == 1
    plugin.fail_startup = True
    with pytest.raises(StartupError, match="frobnicator"):
        async with open_client(state):
            pass


async def test_admin_lists_the_plugin_and_its_hooks(client, plugin):
    response = await client.get("/v1/admin/plugins", headers=ADMIN)
    assert response.status_code == 200, response.text
    listed = {p["name"]: p for p in response.json()}
    assert listed["throwaway"]["default"] is False
    assert {"billfold_routes", "billfold_authorize_debit", "billfold_ledger_entry_written"} <= set(
        listed["throwaway"]["hooks"]
    )
    assert listed["billfold.payments.autoreload"]["default"] is True


# -- authorize_debit ----------------------------------------------------------------------------------------


async def test_authorize_debit_refusal_is_402_with_the_plugin_code(client, new_tenant, state, plugin):
    tenant = await new_tenant(balance=10000)
    plugin.cap_cents = 500
    entries = await count_rows(state, "ledger_entries")

    refused = await client.post("/v1/billing/charges", json={"amount_cents": 501}, headers=tenant.headers)
    body = assert_error(refused, 402, "cap_reached")
    assert body["error"]["fix"] == "Raise the cap."
    held = await client.post("/v1/billing/holds", json={"amount_cents": 600}, headers=tenant.headers)
    assert_error(held, 402, "cap_reached")
    assert await count_rows(state, "ledger_entries") == entries
    assert (await minor_balance(client, tenant.headers))["free"] == 10000

    allowed = await client.post("/v1/billing/charges", json={"amount_cents": 500}, headers=tenant.headers)
    assert allowed.status_code == 201, allowed.text
    assert plugin.authorized == [("debit", 501), ("hold", 600), ("debit", 500)]
    # credits and operator adjustments are not debits: the plugin is not asked
    assert all(kind in ("debit", "hold") for kind, _ in plugin.authorized)
    assert (await minor_balance(client, tenant.headers))["free"] == 9500
    assert await verify(state) == []


# -- ledger_entry_written ------------------------------------------------------------------------------------


async def test_entry_written_runs_inside_the_writing_transaction(client, new_tenant, state, plugin):
    tenant = await new_tenant(balance=1000)
    assert plugin.written == [("adjustment", 1000, 1000, True, None)]

    charged = await client.post("/v1/billing/charges", json={"amount_cents": 100}, headers=tenant.headers)
    assert charged.status_code == 201
    tx = charged.json()["transaction"]
    assert plugin.written[-1] == ("debit", -100, 900, True, None)
    events = await outbox_events(state)
    assert events[-1] == {"entry_id": tx["id"], "free_after": 900}
    assert len(events) == 2

    # refused for lack of money: no entry, so no reaction and no event
    short = await client.post("/v1/billing/charges", json={"amount_cents": 5000}, headers=tenant.headers)
    assert_error(short, 402, "insufficient_funds")
    assert len(await outbox_events(state)) == 2
    assert len(plugin.written) == 2


async def test_a_failing_reaction_rolls_the_entry_and_its_event_back(client, new_tenant, state, plugin):
    tenant = await new_tenant(balance=1000)
    events_before = await outbox_events(state)
    entries_before = await count_rows(state, "ledger_entries")

    headers = {**tenant.headers, "Idempotency-Key": "explosive"}
    response = await client.post(
        "/v1/billing/charges", json={"amount_cents": 100, "description": "explode"}, headers=headers
    )
    assert_error(response, 500, "internal_error")
    assert plugin.written[-1][0] == "debit"  # the reaction ran, wrote its event, then failed

    assert await outbox_events(state) == events_before  # the event it wrote is gone with the charge
    assert await count_rows(state, "ledger_entries") == entries_before
    assert (await minor_balance(client, tenant.headers))["free"] == 1000
    async with state.engine.connect() as conn:
        found = await conn.execute(text("SELECT count(*) FROM ledger_entries WHERE description = 'explode'"))
        assert found.scalar_one() == 0
    assert await verify(state) == []

    # nor was the idempotency key kept: it is free for the next request
    retried = await client.post(
        "/v1/billing/charges", json={"amount_cents": 100, "description": "fine"}, headers=headers
    )
    assert retried.status_code == 201, retried.text
    assert "Idempotent-Replayed" not in retried.headers
    assert (await minor_balance(client, tenant.headers))["free"] == 900
    assert await verify(state) == []


async def test_events_written_by_a_reaction_are_delivered_after_commit(client, new_tenant, state, plugin):
    tenant = await new_tenant(balance=1000)
    tx = (await client.post("/v1/billing/charges", json={"amount_cents": 250}, headers=tenant.headers)).json()
    assert plugin.delivered == []  # nothing is delivered inside the request
    await state.worker.drain()
    assert [d["free_after"] for d in plugin.delivered] == [1000, 750]
    assert plugin.delivered[-1]["entry_id"] == tx["transaction"]["id"]
    assert plugin.delivered[-1]["org_id"] == tenant.org_id
    await state.worker.drain()
    assert len(plugin.delivered) == 2  # each event once
    async with state.engine.connect() as conn:
        pending = await conn.execute(text("SELECT count(*) FROM outbox_events WHERE processed_at IS NULL"))
        assert pending.scalar_one() == 0


async def test_crossing_a_watched_level_calls_the_hook_each_way(client, new_tenant, state, plugin):
    tenant = await new_tenant(balance=1000)
    plugin.watermark = 300
    # a settings change makes the ledger ask the plugins again which levels they watch
    assert (
        await client.patch("/v1/billing", json={"auto_reload_minimum_cents": 100}, headers=tenant.headers)
    ).status_code == 200
    await client.post("/v1/billing/charges", json={"amount_cents": 600}, headers=tenant.headers)
    assert plugin.written[-1][2:] == (400, True, 300)
    assert plugin.crossed == []
    await client.post("/v1/billing/charges", json={"amount_cents": 200}, headers=tenant.headers)
    assert plugin.crossed == [("debit", 200, [300], "down", True)]
    # staying below the level crosses nothing, whichever way the money moves
    await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": 50, "description": "a little"},
        headers=ADMIN,
    )
    await client.post("/v1/billing/charges", json={"amount_cents": 10}, headers=tenant.headers)
    assert plugin.written[-1][2] == 240
    assert len(plugin.crossed) == 1
    # back at the level: an upward crossing, and the level is armed again
    await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": 60, "description": "back"},
        headers=ADMIN,
    )
    assert plugin.crossed[-1] == ("adjustment", 300, [300], "up", True)
    await client.post("/v1/billing/charges", json={"amount_cents": 1}, headers=tenant.headers)
    assert plugin.crossed[-1] == ("debit", 299, [300], "down", True)
    assert len(plugin.crossed) == 3
    assert await verify(state) == []


# -- organization_created ------------------------------------------------------------------------------------


async def test_organization_created_runs_in_the_creating_transaction(client, state, plugin):
    created = await client.post("/v1/admin/organizations", json={"name": "welcome"}, headers=ADMIN)
    assert created.status_code == 201
    orgs_before = await count_rows(state, "organizations")
    refused = await client.post("/v1/admin/organizations", json={"name": "refused"}, headers=ADMIN)
    assert_error(refused, 402, "signup_closed")
    assert plugin.organizations == ["welcome", "refused"]
    assert await count_rows(state, "organizations") == orgs_before  # rolled back with the plugin's refusal
    assert await count_rows(state, "ledger_accounts") == orgs_before
    assert await count_rows(state, "api_keys") == orgs_before
    uuid.UUID(created.json()["id"])


async def test_a_refusing_async_hook_leaves_no_unawaited_sibling(recwarn):
    import gc

    from billfold.errors import PaymentRequired
    from billfold.plugins import call_all

    async def refuse() -> None:
        raise PaymentRequired("no", code="cap_reached")

    async def allow() -> None:
        return None

    with pytest.raises(PaymentRequired):
        await call_all([allow(), refuse(), allow(), allow()])
    gc.collect()
    assert not [w for w in recwarn if "was never awaited" in str(w.message)]
