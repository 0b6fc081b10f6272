"""The `billfold` command line.

Commands import what they need when they run, so ``--help`` and small commands start fast. Every
command that touches the database works on a fresh one: SQLite files are migrated first; a
PostgreSQL database with missing migrations is refused in one line naming ``billfold db upgrade``.
Plugins add commands through ``billfold_register_commands``.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from typing import TYPE_CHECKING, Any

import click

from billfold.audit.commands import audit_command, cli_actor, operator_keys
from billfold.cli_support import LazyState, billfold, long_lived, run_command
from billfold.config import ConfigError, load_config
from billfold.config.loader import default_config_path

if TYPE_CHECKING:
    from billfold.api.app import Billfold


class BillfoldGroup(click.Group):
    """The root group: the core's commands, then the enabled plugins' (loaded on first listing)."""

    _plugins_loaded = False

    def _load_plugin_commands(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        try:
            from billfold.plugins import create_plugin_manager

            with long_lived():
                pm = create_plugin_manager()
        except Exception as exc:  # a broken plugin must not take the core's commands down
            click.echo(f"warning: plugin commands not loaded: {exc}", err=True)
            return
        pm.hook.billfold_register_commands(cli=self, state=LazyState())

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None:
            self._load_plugin_commands()
            found = super().get_command(ctx, cmd_name)
        return found


@click.group(cls=BillfoldGroup)
@click.version_option(package_name="billfold")
def main() -> None:
    """Billfold: prepaid billing. BILLFOLD_CONFIG names the config file (default config/billing.yaml)."""


main.add_command(operator_keys)
main.add_command(audit_command)


def _print(result: dict[str, Any], as_json: bool, text: str) -> None:
    click.echo(json.dumps(result) if as_json else text)


@main.command()
@click.option("--host", default=None, help="Interface to bind (default: server.host from the config).")
@click.option("--port", default=None, type=int, help="Port (default: server.port).")
@click.option("--workers", default=None, type=int, help="Server processes (default: server.workers).")
@click.option("--no-migrate", is_flag=True, help="Do not apply migrations before starting.")
def serve(host: str | None, port: int | None, workers: int | None, no_migrate: bool) -> None:
    """Apply migrations and serve the API (with the background worker in-process)."""
    from billfold.cli_support import migration_sources
    from billfold.dashboard.security import SessionSecretError, share_session_secret
    from billfold.db.migrate import upgrade
    from billfold.reload import run_server
    from billfold.serve_summary import startup_summary

    # one dashboard session secret for every worker, reloaded ones included (the workers inherit it)
    try:
        share_session_secret()
    except SessionSecretError as exc:
        raise click.ClickException(str(exc)) from None
    app = billfold()  # validates the config and every plugin section, or refuses to start
    applied = None
    if not no_migrate:
        applied = upgrade(app.config.database.url, sources=migration_sources(app))
    server = app.config.server
    summary = startup_summary(
        app,
        host=host or server.host,
        port=port or server.port,
        workers=workers or server.workers,
        applied=applied,
    )
    click.echo("\n".join(summary))
    os.environ.setdefault("BILLFOLD_CONFIG", str(default_config_path()))
    # the workers' metrics are summed from one directory (billfold.metrics.multiprocess)
    from billfold.metrics.multiprocess import multiprocess_directory

    # under uvicorn's supervisor at any worker count: SIGHUP reloads billing.yaml (billfold.reload)
    with multiprocess_directory(app.config.metrics.enabled):
        run_server(
            "billfold.api.app:create_app_from_env",
            factory=True,
            host=host or server.host,
            port=port or server.port,
            workers=workers or server.workers,
            log_level=app.config.logging.level,
            access_log=False,  # Billfold writes its own line per request (logging.requests)
            **_uvicorn_logging(app.config.logging),
            loop="uvloop",
            http="httptools",
        )


def _uvicorn_logging(config: Any) -> dict[str, Any]:
    """uvicorn's ``log_config`` when its lines must match ``logging.format`` (JSON)."""
    from billfold.logs import uvicorn_log_config

    log_config = uvicorn_log_config(config)
    return {} if log_config is None else {"log_config": log_config}


@main.command()
@click.option("--once", is_flag=True, help="Deliver what is due (and run each plugin task once), then exit.")
def worker(once: bool) -> None:
    """Run the background worker alone (outbox delivery, hold expiry, auto-reload, plugin tasks)."""
    import asyncio

    from billfold.logs import configure_logging
    from billfold.reload import reexec_if_asked, worker_reload_on_hup

    app = billfold()
    configure_logging(app.config.logging)  # one line per job, in the configured format

    async def go() -> None:
        await app.worker.load_handlers()
        if once:
            await app.worker.drain()
            await app.worker.run_tasks_once()
            return
        app.worker.start()
        stop = asyncio.Event()
        worker_reload_on_hup(stop)  # SIGHUP: a valid billing.yaml restarts the worker with it
        try:
            await stop.wait()
        finally:
            await app.worker.stop()

    run_command(go())
    reexec_if_asked()


@main.group()
def config() -> None:
    """Configuration commands."""


@config.command("diff")
@click.argument("old")
@click.argument("new")
def config_diff(old: str, new: str) -> None:
    """What changes from config OLD to config NEW (prices, plans and caps, plugins, ...): both are
    validated first, as start-up would."""
    from billfold.config.diff import diff
    from billfold.plugins import create_plugin_manager, validate_plugin_configs

    configs = []
    for path in (old, new):
        try:
            loaded, lines = load_config(path)
            validate_plugin_configs(create_plugin_manager(), loaded.plugins, lines=lines, source=path)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        configs.append(loaded)
    changes = diff(configs[0], configs[1])
    click.echo("\n".join(changes) if changes else "no changes")


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
@click.option("--revision", default="head", show_default=True, help="The core's target revision.")
def db_upgrade(revision: str) -> None:
    """Apply the migrations: the core's, then each enabled plugin's (each in its own version table)."""
    from billfold.cli_support import migration_sources
    from billfold.db.migrate import upgrade

    app = billfold()
    for applied in upgrade(app.config.database.url, revision, sources=migration_sources(app)):
        click.echo(applied.describe())
    click.echo("database is at " + revision)


@main.group()
def orgs() -> None:
    """Organizations."""


@orgs.command("create")
@click.option("--name", required=True)
@click.option("--currency", default=None, help="Default: default_currency from the config.")
@click.option("--reason", default=None, help="Optional: why (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Optional: print one JSON object.")
def orgs_create(name: str, currency: str | None, reason: str | None, as_json: bool) -> None:
    """Create an organization and its first API key (shown once)."""
    app = billfold()

    async def go() -> dict[str, Any]:
        org, key = await app.actions.create_organization(
            cli_actor(), name=name, currency=currency, reason=reason
        )
        return {
            "id": str(org.id),
            "name": org.name,
            "currency": org.currency,
            "api_key": key.api_key,
            "key_id": str(key.id),
        }

    result = run_command(go())
    _print(
        result,
        as_json,
        f"organization {result['id']} ({result['name']}, {result['currency']})\n"
        f"API key (shown once): {result['api_key']}",
    )


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--org", "org_id", required=True, type=click.UUID)
@click.option("--name", default="")
@click.option("--reason", default=None, help="Optional: why (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Optional: print one JSON object.")
def keys_create(org_id: uuid.UUID, name: str, reason: str | None, as_json: bool) -> None:
    """Issue another API key for an organization (shown once)."""
    app = billfold()

    async def go() -> dict[str, Any]:
        key = await app.actions.issue_key(cli_actor(), org_id, name=name, reason=reason)
        return {"id": str(key.id), "org_id": str(key.org_id), "prefix": key.prefix, "api_key": key.api_key}

    result = run_command(go())
    _print(result, as_json, f"API key (shown once): {result['api_key']}")


@keys.command("revoke")
@click.argument("key_id", type=click.UUID)
@click.option("--reason", default=None, help="Optional: why (recorded in the audit trail).")
def keys_revoke(key_id: uuid.UUID, reason: str | None) -> None:
    """Revoke an API key."""
    app = billfold()
    run_command(app.actions.revoke_key(cli_actor(), key_id, reason=reason))
    click.echo(f"revoked {key_id}")


@main.group()
def ledger() -> None:
    """Ledger commands."""


@ledger.command("adjust")
@click.option("--org", "org_id", required=True, type=click.UUID)
@click.option("--amount-cents", required=True, type=int, help="Positive credits, negative debits.")
@click.option("--description", required=True)
@click.option("--reason", default=None, help="Optional: why (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Optional: print one JSON object.")
def ledger_adjust(
    org_id: uuid.UUID, amount_cents: int, description: str, reason: str | None, as_json: bool
) -> None:
    """Post an operator adjustment."""
    app = billfold()

    async def go() -> dict[str, Any]:
        posted = await app.actions.adjust(
            cli_actor(), org_id, amount_cents, description=description, reason=reason
        )
        return {
            "entry_id": posted.entry.id,
            "amount_cents": posted.entry.amount_cents,
            "free": posted.account.free_cents,
            "reserved": posted.account.reserved_cents,
            "total": posted.account.total_cents,
        }

    result = run_command(go())
    _print(result, as_json, f"entry {result['entry_id']}: balance now {result['free']}")


@ledger.command("verify")
def ledger_verify() -> None:
    """Check every ledger invariant; exit 1 with a report when one is broken."""
    from billfold.ledger.verify import verify_ledger

    app = billfold()

    async def go() -> list[Any]:
        async with app.db.reading() as conn:
            return await verify_ledger(conn)

    violations = run_command(go())
    if violations:
        click.echo(f"{len(violations)} invariant violation(s):", err=True)
        for v in violations:
            click.echo(f"  [{v.check}] org={v.org_id}: {v.detail}", err=True)
        sys.exit(1)
    click.echo("ledger ok: every invariant holds")


def _refresh_levels(app: Billfold) -> tuple[int, int]:
    from sqlalchemy import select

    from billfold.ledger.rows import accounts

    async def go() -> tuple[int, int]:
        async with app.db.reading() as conn:
            before = {
                row[0]: list(row[1] or [])
                for row in await conn.execute(select(accounts.c.org_id, accounts.c.watch_levels))
            }
        changed = 0
        for org_id, old in before.items():
            if await app.ledger.refresh_levels(org_id) != old:
                changed += 1
        return len(before), changed

    return run_command(go())


@ledger.command("refresh-levels")
def ledger_refresh_levels() -> None:
    """Ask the plugins again which balance levels they watch, for every account.

    Run it after installing or reconfiguring a plugin that implements billfold_balance_levels:
    only new organizations and settings changes refresh them by themselves. One short transaction
    per account."""
    total, changed = _refresh_levels(billfold())
    click.echo(f"levels refreshed: {total} account(s), {changed} changed")


@ledger.command("refresh-watermarks", hidden=True)
def ledger_refresh_watermarks() -> None:
    """The former name of refresh-levels."""
    total, changed = _refresh_levels(billfold())
    click.echo(f"levels refreshed: {total} account(s), {changed} changed")


@main.group()
def month() -> None:
    """Month close (UTC calendar months)."""


@month.command("close")
@click.option("--period", required=True, help="The month, YYYY-MM (UTC); it must have ended.")
@click.option("--org", "org_id", default=None, type=click.UUID, help="Only this organization.")
@click.option(
    "--reissue",
    is_flag=True,
    help="With --org: cut a new invoice (the next number) for a closed month whose invoice was voided.",
)
@click.option("--json", "as_json", is_flag=True, help="Optional: print one JSON object.")
def month_close(period: str, org_id: uuid.UUID | None, reissue: bool, as_json: bool) -> None:
    """Close a month for every organization (or one): once each, whoever else is closing it.

    The worker does this by itself shortly after a month ends; run it by hand to close at once or
    to finish a close that was interrupted (organizations already closed are skipped). Each
    organization with activity in the month gets its invoice in the same transaction."""
    from billfold.errors import BillfoldError

    app = billfold()
    if reissue:
        if org_id is None:
            raise click.UsageError("--reissue needs --org")
        try:
            invoice = run_command(app.month_close.reissue(org_id, period))
        except BillfoldError as error:
            raise click.ClickException(error.message) from None
        number = getattr(invoice, "number", None)
        _print(
            {"period": period, "org_id": str(org_id), "invoice": number},
            as_json,
            f"{period}: reissued invoice {number}" if number else f"{period}: no activity, no invoice",
        )
        return
    try:
        report = run_command(app.month_close.close(period, org_id=org_id))
    except BillfoldError as error:
        raise click.ClickException(error.message) from None
    result = {"period": report.period, "closed": [str(o) for o in report.closed], "already": report.already}
    _print(
        result,
        as_json,
        f"{period}: closed {len(report.closed)} organization(s), {report.already} already closed",
    )


@main.group()
def clock() -> None:
    """The business clock (development only)."""


@clock.command("show")
def clock_show() -> None:
    """Print the business time."""
    from billfold.clock import now

    run_command(billfold().clock.load())
    click.echo(now().isoformat())


@main.group()
def plugins() -> None:
    """Plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Optional: print JSON.")
def plugins_list(as_json: bool) -> None:
    """List installed plugins, whether they are enabled, and the hooks each implements."""
    from billfold.plugins import describe_plugins

    app = billfold()
    described = describe_plugins(app.pm, app.sections)
    if as_json:
        click.echo(json.dumps(described))
        return
    for p in described:
        origin = (
            "default" if p["default"] else f"{p['distribution'] or 'unpackaged'} {p['version'] or ''}".strip()
        )
        state = "enabled" if p["enabled"] else "disabled"
        click.echo(f"{p['name']} ({origin}, {state}): {', '.join(p['hooks']) or '-'}")
