"""Billfold hook implementations of the tiers plugin (entry point ``tiers`` in group ``billfold``).

Pricing answers ``billfold_price_usage`` first (``tryfirst``) for the channels that have a ladder
and passes for the others, so the core's flat price applies to them; ``billfold_month_close``
starts the next month from the closed one; ``billfold_usage_tier`` fills the tier progress of the
month's usage report. With ``plugins.tiers.enabled: false`` none of this runs.
"""

from __future__ import annotations

import datetime
import json
import uuid
from pathlib import Path
from typing import Any

import click
import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold import MigrationSource, PriceQuote, StartupError, UsageItem, hookimpl, run_command
from billfold_tiers.config import TiersConfig
from billfold_tiers.service import TierList, Tiers, tier_list


@hookimpl
def billfold_config_schema() -> tuple[str, type[TiersConfig]]:
    """The ``plugins.tiers`` section of billing.yaml."""
    return ("tiers", TiersConfig)


@hookimpl
def billfold_migrations(state: Any) -> MigrationSource:
    return MigrationSource(name="tiers", script_location=Path(__file__).parent / "migrations")


@hookimpl
def billfold_startup(state: Any) -> None:
    """Check the ladders against ``channels`` and ``currencies``: every step prices every
    currency and every message type of its channel, so no unit silently falls back."""
    config: TiersConfig = state.plugin_config("tiers")
    channels = state.config.channels
    currencies = list(state.config.currencies)
    for name, ladder in config.channels.items():
        where = f"plugins.tiers.channels.{name}"
        channel = channels.get(name)
        if channel is None:
            raise StartupError(
                f"{where}: billing.yaml declares no channel {name!r} (channels: {', '.join(channels)})"
            )
        types = list(channel.message_types)
        for listed in ladder.volume_message_types or []:
            if listed not in types:
                raise StartupError(f"{where}.volume_message_types: {name} has no message type {listed!r}")
        for position, step in enumerate(ladder.steps):
            at = f"{where}.steps[{position}]"
            for extra in step.message_types:
                if extra not in types:
                    raise StartupError(f"{at}.message_types: {name} has no message type {extra!r}")
            for message_type in [None, *types] if step.price is not None or not types else types:
                for currency in currencies:
                    if step.price_for(message_type, currency) is None:
                        what = f"message type {message_type!r}" if message_type else "the channel"
                        raise StartupError(f"{at}: no price for {what} in {currency}")


@hookimpl(tryfirst=True)
async def billfold_price_usage(
    conn: AsyncConnection,
    org_id: uuid.UUID,
    channel: str,
    message_type: str | None,
    quantity: int,
    currency: str,
    at: datetime.datetime,
    state: Any,
) -> PriceQuote | None:
    return await Tiers(state).price(conn, org_id, channel, message_type, quantity, currency, at)


@hookimpl(tryfirst=True)
async def billfold_price_usage_batch(
    conn: AsyncConnection,
    org_id: uuid.UUID,
    items: list[UsageItem],
    currency: str,
    at: datetime.datetime,
    state: Any,
) -> list[PriceQuote | None] | None:
    return await Tiers(state).price_many(conn, org_id, items, currency, at)


@hookimpl
async def billfold_usage_tier(
    conn: AsyncConnection, org_id: uuid.UUID, channel: str, month: str, state: Any
) -> dict[str, Any] | None:
    tiers = Tiers(state)
    if tiers.ladder(channel) is None:
        return None
    return await tiers.tier(conn, org_id, channel, month)


@hookimpl
async def billfold_month_close(conn: AsyncConnection, org_id: uuid.UUID, period: str, state: Any) -> None:
    await Tiers(state).close_month(conn, org_id, period)


@hookimpl
async def billfold_domain_event(conn: AsyncConnection, event: Any, state: Any) -> None:
    """A reserved send that failed or expired gives its units back to the month's volume."""
    if event.type != "usage.released" or event.org_id is None:
        return
    payload = event.payload
    await Tiers(state).give_back(
        conn,
        event.org_id,
        payload["channel"],
        payload.get("message_type"),
        int(payload["billed_quantity"]),
        payload["month"],
    )


@hookimpl
async def billfold_dashboard_panels(org_id: uuid.UUID, state: Any) -> list[Any]:
    """The organization page's "Volume tiers" panel: each channel's step, pin and unpin."""
    from billfold_tiers.dashboard import tiers_panel

    return await tiers_panel(org_id, state)


@hookimpl
def billfold_routes(state: Any) -> list[Any]:
    from billfold_tiers.routes import routes

    return routes(state)


# -- command line ---------------------------------------------------------------------------------


@hookimpl
def billfold_register_commands(cli: click.Group, state: Any) -> None:
    @cli.group("tiers")
    def tiers_group() -> None:
        """Volume tiers per channel (the tiers plugin)."""

    @tiers_group.command("show")
    @click.option("--org", "org_id", required=True, type=click.UUID, help="The organization's id.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON (optional).")
    def show(org_id: uuid.UUID, as_json: bool) -> None:
        """Each tiered channel's step, volume and downgrade counter this month."""

        async def load() -> TierList:
            await state.orgs.get(org_id)
            return await tier_list(state, org_id, None)

        listed = run_command(load())
        if as_json:
            click.echo(json.dumps(msgspec.to_builtins(listed), indent=2))
            return
        for t in listed.tiers:
            following = f"next {t.next_tier} at {t.next_threshold}" if t.next_tier else "top step"
            click.echo(
                f"{t.channel}: {t.current} ({t.qualification_source}), {t.volume_used} units in {t.month}, "
                f"{following}, downgrade counter {t.downgrade_counter}"
            )
