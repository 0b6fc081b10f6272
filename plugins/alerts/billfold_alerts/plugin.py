"""Billfold hook implementations of the alerts plugin (entry point ``alerts`` in group ``billfold``).

Balance alerts watch levels (``billfold_balance_levels``) and react to crossings inside the
writing transaction (``billfold_balance_crossed``), so a charge that crosses nothing stays on the
core's single-statement path; other events arrive through ``billfold_domain_event``, also inside
their transaction. Both only queue rows; the worker task sends them.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from billfold import MigrationSource, WorkerTask, hookimpl, run_command
from billfold_alerts import events as ev
from billfold_alerts import store
from billfold_alerts.config import AlertsConfig

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from billfold import (
        AccountRow,
        DashboardPanel,
        Direction,
        DomainEvent,
        EntryRow,
        MetricsSource,
        OrgRow,
        PluginState,
    )
    from billfold_alerts.delivery import Dispatcher

NAME = "alerts"

_dispatchers: dict[int, tuple[Any, Dispatcher]] = {}
"""Delivery (httpx) and the routes (Litestar) are imported when first used, not by every command."""


def dispatcher_for(state: PluginState) -> Dispatcher:
    """The one dispatcher (and HTTP client) of a running Billfold."""
    from billfold_alerts.delivery import Dispatcher

    found = _dispatchers.get(id(state))
    if found is None or found[0] is not state:
        found = (state, Dispatcher(state, state.plugin_config(NAME)))
        _dispatchers[id(state)] = found
    return found[1]


def _units(state: PluginState, currency: str) -> int:
    found = state.config.currencies.get(currency.lower())
    return found.minor_units if found is not None else 2


@hookimpl
def billfold_config_schema() -> tuple[str, type[AlertsConfig]]:
    """The ``plugins.alerts`` section of billing.yaml."""
    return (NAME, AlertsConfig)


@hookimpl
def billfold_migrations(state: PluginState) -> MigrationSource:
    return MigrationSource(name=NAME, script_location=Path(__file__).parent / "migrations")


@hookimpl
def billfold_routes(state: PluginState) -> list[Any]:
    from billfold_alerts.routes import routes

    return routes(state, dispatcher_for(state))


@hookimpl
def billfold_worker_tasks(state: PluginState) -> list[WorkerTask]:
    dispatcher = dispatcher_for(state)
    config: AlertsConfig = state.plugin_config(NAME)
    return [
        WorkerTask(
            name="alerts-deliveries", interval_seconds=config.poll_interval_seconds, run=dispatcher.run
        )
    ]


@hookimpl
async def billfold_organization_created(conn: AsyncConnection, org: OrgRow, state: PluginState) -> None:
    """A new organization starts with the configured levels."""
    config: AlertsConfig = state.plugin_config(NAME)
    await store.save_levels(
        conn, org.id, store.Levels(thresholds=list(config.default_levels), fired=[], depleted=False)
    )


@hookimpl
async def billfold_balance_levels(
    conn: AsyncConnection, org_id: uuid.UUID, state: PluginState
) -> list[int] | None:
    """The organization's levels and 1 (for depletion), while an enabled endpoint watches the
    balance; none otherwise, so the charges of an organization without one never leave the
    single-statement path."""
    if not await store.watches_balance(conn, org_id):
        return None
    config: AlertsConfig = state.plugin_config(NAME)
    levels = await store.get_levels(conn, org_id, config.default_levels)
    return sorted({*levels.thresholds, ev.DEPLETED_LEVEL}, reverse=True)


@hookimpl
async def billfold_balance_crossed(
    conn: AsyncConnection,
    entry: EntryRow,
    account: AccountRow,
    levels: list[int],
    direction: Direction,
    state: PluginState,
) -> None:
    """Down: ``billing.balance_low`` once per level crossed (and ``billing.balance_depleted`` at 0
    or below). Up: the levels back at or below the free balance re-arm; back at or above the
    highest that fired, ``billing.balance_recovered``. Queued in the writing transaction."""
    config: AlertsConfig = state.plugin_config(NAME)
    org_id = account.org_id
    mine = await store.get_levels(conn, org_id, config.default_levels)
    units = _units(state, account.currency)
    free = account.free_cents
    if direction == "down":
        newly = [level for level in levels if level in mine.thresholds and level not in mine.fired]
        depleted = free <= 0 and ev.DEPLETED_LEVEL in levels and not mine.depleted
        if not newly and not depleted:
            return
        for level in sorted(newly, reverse=True):
            targets = await store.subscribers(conn, org_id, ev.BALANCE_LOW)
            await store.queue(conn, org_id, ev.BALANCE_LOW, ev.balance_data(account, level, units), targets)
        if depleted:
            targets = await store.subscribers(conn, org_id, ev.BALANCE_DEPLETED)
            await store.queue(conn, org_id, ev.BALANCE_DEPLETED, ev.balance_data(account, 0, units), targets)
        await store.save_levels(
            conn,
            org_id,
            store.Levels(
                thresholds=mine.thresholds, fired=[*mine.fired, *newly], depleted=mine.depleted or depleted
            ),
        )
        return
    still = [level for level in mine.fired if level > free]
    still_depleted = mine.depleted and free <= 0
    if still == mine.fired and still_depleted == mine.depleted:
        return
    if not still and not still_depleted:
        threshold = max(mine.fired, default=0)
        targets = await store.subscribers(conn, org_id, ev.BALANCE_RECOVERED)
        await store.queue(
            conn, org_id, ev.BALANCE_RECOVERED, ev.balance_data(account, threshold, units), targets
        )
    await store.save_levels(
        conn, org_id, store.Levels(thresholds=mine.thresholds, fired=still, depleted=still_depleted)
    )


@hookimpl
async def billfold_domain_event(conn: AsyncConnection, event: DomainEvent, state: PluginState) -> None:
    """Forward the catalog's domain events to the endpoints subscribed to them."""
    if event.type not in ev.DOMAIN_EVENTS or event.org_id is None:
        return
    targets = await store.subscribers(conn, event.org_id, event.type)
    if not targets:
        return
    currency = event.payload.get("currency")
    if not isinstance(currency, str) or not currency:
        currency = (await state.ledger.account(event.org_id, conn=conn)).currency
    data = ev.domain_data(event.type, event.payload, currency, _units(state, currency))
    await store.queue(conn, event.org_id, event.type, data, targets)


@hookimpl
async def billfold_dashboard_panels(org_id: uuid.UUID, state: PluginState) -> list[DashboardPanel]:
    """The organization page's "Webhooks" panel: endpoints and recent deliveries; disable or
    enable an endpoint, replay a delivery."""
    from billfold_alerts.dashboard import alerts_panel

    return await alerts_panel(org_id, state)


@hookimpl
def billfold_metrics(state: PluginState) -> list[MetricsSource]:
    """Delivery attempts by outcome (a Counter, counted as each attempt ends) and the queue's
    depth and backlog, read at each scrape."""
    from billfold_alerts import metrics

    return [metrics.DELIVERIES, metrics.queue_reader(state)]


@hookimpl
def billfold_register_commands(cli: click.Group, state: PluginState) -> None:
    @cli.command("alerts-deliver")
    def deliver() -> None:
        """Send the due webhook deliveries now (the worker does this continuously)."""

        async def go() -> int:
            dispatcher = dispatcher_for(state)
            try:
                return await dispatcher.run()
            finally:
                await dispatcher.close()

        click.echo(f"{run_command(go())} attempts")
