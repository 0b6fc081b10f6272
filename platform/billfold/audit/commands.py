"""``billfold audit`` and ``billfold operator-keys``: the audit trail and named operator keys."""

from __future__ import annotations

import datetime
import getpass
import json
import uuid
from typing import Any

import click

from billfold.cli_support import billfold, run_command


def cli_actor() -> Any:
    """The actor of a command-line action: ``cli:<the operating-system user>``."""
    from billfold.audit.service import AuditActor

    try:
        user = getpass.getuser()
    except Exception:  # no user name in the environment nor the password database
        user = "unknown"
    return AuditActor(who=f"cli:{user}"[:200])


@click.group("operator-keys")
def operator_keys() -> None:
    """Named operator keys (BILLFOLD_ADMIN_API_KEY stays the bootstrap key)."""


@operator_keys.command("create")
@click.option(
    "--label", required=True, help="Who or what uses the key; recorded as the actor of its actions."
)
@click.option("--reason", default=None, help="Optional: why (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Optional: print one JSON object.")
def operator_keys_create(label: str, reason: str | None, as_json: bool) -> None:
    """Create a named operator key (shown once; only its hash is stored)."""
    app = billfold()
    issued = run_command(app.operator_keys.create(cli_actor(), label, reason=reason))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "id": str(issued.id),
                    "label": issued.label,
                    "prefix": issued.prefix,
                    "api_key": issued.api_key,
                }
            )
        )
        return
    click.echo(f"operator key {issued.label!r} ({issued.id})\nkey (shown once): {issued.api_key}")


@operator_keys.command("revoke")
@click.argument("label")
@click.option("--reason", default=None, help="Optional: why (recorded in the audit trail).")
def operator_keys_revoke(label: str, reason: str | None) -> None:
    """Revoke the live operator key with this LABEL (or id); it stops working at once."""
    app = billfold()
    row = run_command(app.operator_keys.revoke(cli_actor(), label, reason=reason))
    click.echo(f"revoked operator key {row.label!r} ({row.id})")


@operator_keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Optional: revoked keys too.")
@click.option("--json", "as_json", is_flag=True, help="Optional: print JSON.")
def operator_keys_list(include_revoked: bool, as_json: bool) -> None:
    """The named operator keys (never the keys themselves)."""
    import msgspec

    app = billfold()
    rows = run_command(app.operator_keys.list(include_revoked=include_revoked))
    if as_json:
        click.echo(msgspec.json.encode(rows).decode())
        return
    for row in rows:
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "live"
        created = f"created {row.created_at:%Y-%m-%d %H:%M} by {row.created_by}"
        click.echo(f"{row.label}  {row.prefix}…  {created}  {state}")
    if not rows:
        click.echo("no named operator keys")


def _instant(value: str | None, name: str, *, end_of_day: bool = False) -> datetime.datetime | None:
    from billfold.api.params import parse_instant
    from billfold.errors import ValidationFailed

    try:
        moment = parse_instant(value, name, end_of_day=end_of_day)
    except ValidationFailed as error:
        raise click.BadParameter(error.message, param_hint=f"--{name}") from None
    if moment is not None and end_of_day and value is not None and len(value) == 10:
        moment += datetime.timedelta(microseconds=1)
    return moment


@click.command("audit")
@click.option("--org", "org_id", default=None, type=click.UUID, help="Optional: only this organization.")
@click.option("--action", default=None, help="Optional: only this action (e.g. ledger.adjusted).")
@click.option(
    "--actor", default=None, help="Optional: only this actor (a key's label, bootstrap, cli:<user>)."
)
@click.option("--since", default=None, help="Optional: from this date or date-time (UTC, inclusive).")
@click.option(
    "--until", default=None, help="Optional: before this date-time (a bare date: through that day)."
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200), help="Rows per page.")
@click.option("--cursor", default=None, help="Optional: the cursor printed after the previous page.")
@click.option("--json", "as_json", is_flag=True, help="Optional: print one JSON object (data, next_cursor).")
def audit_command(
    org_id: uuid.UUID | None,
    action: str | None,
    actor: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """The audit trail of operator actions, newest first."""
    import msgspec

    if cursor is not None and not cursor.isdigit():
        raise click.BadParameter("not a cursor printed by this command", param_hint="--cursor")
    app = billfold()
    page = run_command(
        app.audit.page(
            org_id=org_id,
            action=action,
            actor=actor,
            since=_instant(since, "since"),
            until=_instant(until, "until", end_of_day=True),
            cursor=int(cursor) if cursor else None,
            limit=limit,
        )
    )
    if as_json:
        click.echo(msgspec.json.encode({"data": page.items, "next_cursor": page.next_cursor}).decode())
        return
    for row in page.items:
        org = f" org={row.org_id}" if row.org_id else ""
        reason = f" reason={row.reason!r}" if row.reason else ""
        tracking = f" {row.tracking_id}" if row.tracking_id else ""
        click.echo(
            f"{row.id}  {row.created_at:%Y-%m-%d %H:%M:%S}  {row.actor}  {row.action}{org}{reason}{tracking}"
        )
        if row.before is not None or row.after is not None:
            click.echo(f"      {json.dumps(row.before)} -> {json.dumps(row.after)}")
    if not page.items:
        click.echo("no audit rows")
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")
