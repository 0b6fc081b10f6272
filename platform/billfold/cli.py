"""The `billfold` command line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from billfold.config import ConfigError, load_config
from billfold.config.loader import default_config_path
from billfold.errors import BillfoldError

T = TypeVar("T")


def _state() -> Any:
    from billfold.state import AppState

    try:
        config, lines = load_config()
        return AppState(config, lines=lines, source=str(default_config_path()))
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None


def _run(fn: Callable[[Any], Awaitable[T]]) -> T:
    state = _state()

    async def main() -> T:
        try:
            return await fn(state)
        finally:
            await state.engine.dispose()

    try:
        return asyncio.run(main())
    except BillfoldError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None


@click.group()
@click.version_option(package_name="billfold")
def main() -> None:
    """Billfold: prepaid billing. BILLFOLD_CONFIG names the config file (default config/billing.yaml)."""


@main.command()
@click.option("--host", default=None, help="Interface to bind (default: server.host from the config).")
@click.option("--port", default=None, type=int, help="Port (default: server.port).")
@click.option("--workers", default=None, type=int, help="Server processes (default: server.workers).")
@click.option("--no-migrate", is_flag=True, help="Do not apply migrations before starting.")
def serve(host: str | None, port: int | None, workers: int | None, no_migrate: bool) -> None:
    """Apply migrations and serve the API (with the background worker in-process)."""
    import uvicorn

    from billfold.db.migrate import upgrade

    state = _state()  # validates the config and every plugin section, or refuses to start
    if not no_migrate:
        upgrade(state.config.database.url)
    server = state.config.server
    os.environ.setdefault("BILLFOLD_CONFIG", str(default_config_path()))
    uvicorn.run(
        "billfold.api.app:create_app_from_env",
        factory=True,
        host=host or server.host,
        port=port or server.port,
        workers=workers or server.workers,
        log_level="info",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


@main.command()
@click.option("--once", is_flag=True, help="Deliver what is due, then exit.")
def worker(once: bool) -> None:
    """Run the background worker alone (outbox delivery, hold expiry, auto-reload)."""

    async def go(state: Any) -> None:
        await state.worker.load_handlers()
        if once:
            await state.worker.drain()
            return
        state.worker.start()
        try:
            await asyncio.Event().wait()
        finally:
            await state.worker.stop()

    _run(go)


@main.group()
def config() -> None:
    """Configuration commands."""


@config.command("check")
@click.argument("path", required=False)
def config_check(path: str | None) -> None:
    """Validate a config file (default: BILLFOLD_CONFIG or config/billing.yaml), plugins included."""
    from billfold.plugins import create_plugin_manager, validate_plugin_configs

    try:
        loaded, lines = load_config(path)
        source = path or str(default_config_path())
        validate_plugin_configs(create_plugin_manager(), loaded.plugins, lines=lines, source=source)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(
        f"ok: {path or default_config_path()} ({loaded.environment}, {len(loaded.currencies)} currencies)"
    )


@main.group()
def db() -> None:
    """Database commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the migrations."""
    from billfold.db.migrate import upgrade

    try:
        loaded, _ = load_config()
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None
    upgrade(loaded.database.url, revision)
    click.echo("database is at " + revision)


@main.group()
def orgs() -> None:
    """Organizations."""


@orgs.command("create")
@click.option("--name", required=True)
@click.option("--currency", default=None, help="Default: default_currency from the config.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def orgs_create(name: str, currency: str | None, as_json: bool) -> None:
    """Create an organization and its first API key (shown once)."""

    async def go(state: Any) -> dict[str, Any]:
        async with state.engine.begin() as conn:
            org = await state.orgs.create(conn, name=name, currency=currency or state.config.default_currency)
            key = await state.orgs.issue_key(conn, org.id, name="default")
        return {
            "id": str(org.id),
            "name": org.name,
            "currency": org.currency,
            "api_key": key.api_key,
            "key_id": str(key.id),
        }

    result = _run(go)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"organization {result['id']} ({result['name']}, {result['currency']})")
        click.echo(f"API key (shown once): {result['api_key']}")


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--org", "org_id", required=True, type=click.UUID)
@click.option("--name", default="")
@click.option("--json", "as_json", is_flag=True)
def keys_create(org_id: uuid.UUID, name: str, as_json: bool) -> None:
    """Issue another API key for an organization (shown once)."""

    async def go(state: Any) -> dict[str, Any]:
        async with state.engine.begin() as conn:
            key = await state.orgs.issue_key(conn, org_id, name=name)
        return {"id": str(key.id), "org_id": str(key.org_id), "prefix": key.prefix, "api_key": key.api_key}

    result = _run(go)
    click.echo(json.dumps(result) if as_json else f"API key (shown once): {result['api_key']}")


@keys.command("revoke")
@click.argument("key_id", type=click.UUID)
def keys_revoke(key_id: uuid.UUID) -> None:
    """Revoke an API key."""

    async def go(state: Any) -> None:
        async with state.engine.begin() as conn:
            await state.orgs.revoke_key(conn, key_id)

    _run(go)
    click.echo(f"revoked {key_id}")


@main.group()
def ledger() -> None:
    """Ledger commands."""


@ledger.command("adjust")
@click.option("--org", "org_id", required=True, type=click.UUID)
@click.option("--amount-cents", required=True, type=int, help="Positive credits, negative debits.")
@click.option("--description", required=True)
@click.option("--json", "as_json", is_flag=True)
def ledger_adjust(org_id: uuid.UUID, amount_cents: int, description: str, as_json: bool) -> None:
    """Post an operator adjustment."""

    async def go(state: Any) -> dict[str, Any]:
        async with state.engine.begin() as conn:
            posted = await state.ledger.adjust(conn, org_id, amount_cents, description=description)
        return {
            "entry_id": posted.entry.id,
            "amount_cents": posted.entry.amount_cents,
            "free": posted.account.free_cents,
            "reserved": posted.account.reserved_cents,
            "total": posted.account.total_cents,
        }

    result = _run(go)
    click.echo(json.dumps(result) if as_json else f"entry {result['entry_id']}: balance now {result['free']}")


@ledger.command("verify")
def ledger_verify() -> None:
    """Check every ledger invariant; exit 1 with a report when one is broken."""
    from billfold.ledger.verify import verify_ledger

    async def go(state: Any) -> list[Any]:
        async with state.engine.connect() as conn:
            return await verify_ledger(conn)

    violations = _run(go)
    if violations:
        click.echo(f"{len(violations)} invariant violation(s):", err=True)
        for v in violations:
            click.echo(f"  [{v.check}] org={v.org_id}: {v.detail}", err=True)
        sys.exit(1)
    click.echo("ledger ok: every invariant holds")


@ledger.command("refresh-watermarks")
def ledger_refresh_watermarks() -> None:
    """Ask the plugins again which balance levels they watch, for every account.

    Run it after installing or reconfiguring a plugin that implements billfold_balance_watermarks:
    accounts store the highest watched level, and only new organizations and settings changes
    refresh it by themselves. One short transaction per account."""
    from sqlalchemy import select

    from billfold.db import table_of
    from billfold.ledger.models import Account

    accounts = table_of(Account)

    async def go(state: Any) -> tuple[int, int]:
        async with state.engine.connect() as conn:
            before = dict((await conn.execute(select(accounts.c.org_id, accounts.c.watermark_cents))).all())
        changed = 0
        for org_id, old in before.items():
            async with state.engine.begin() as conn:
                if await state.ledger.refresh_watermark(conn, org_id) != old:
                    changed += 1
        return len(before), changed

    total, changed = _run(go)
    click.echo(f"watermarks refreshed: {total} account(s), {changed} changed")


@main.group()
def plugins() -> None:
    """Plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True)
def plugins_list(as_json: bool) -> None:
    """List registered plugins and the hooks they implement."""
    from billfold.plugins import create_plugin_manager, plugin_names

    described = plugin_names(create_plugin_manager())
    if as_json:
        click.echo(json.dumps(described))
        return
    for p in described:
        origin = "default" if p["default"] else f"{p['distribution']} {p['version']}"
        click.echo(f"{p['name']} ({origin}): {', '.join(p['hooks'])}")
