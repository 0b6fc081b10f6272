"""The alerts plugin's panel on an organization's dashboard page: its webhook endpoints and their
latest deliveries, and three actions, disable and enable an endpoint, and replay a delivery. The
dashboard draws the forms, checks the session, the CSRF token and the reason, and writes the audit
row (``webhook_endpoint.disabled``, ``webhook_endpoint.enabled``, ``webhook_delivery.replayed``) in
the transaction that ``run`` receives. The actions change rows exactly as the tenant's routes do
(:func:`billfold_alerts.store.change_endpoint`, :func:`billfold_alerts.store.replay`)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from billfold import (
    ActionCall,
    ActionResult,
    DashboardAction,
    DashboardField,
    DashboardPanel,
    ValidationFailed,
    format_minor,
)
from billfold_alerts import events as ev
from billfold_alerts import store
from billfold_alerts.config import AlertsConfig

if TYPE_CHECKING:
    from billfold import PluginState

PLUGIN = "alerts"
RECENT = 20
"""Deliveries shown: the organization's newest, every endpoint's together."""
SHORT = 60
"""Characters of a URL or a description shown on one line (all of it on hover)."""

TEMPLATE = """
<p id="alerts-levels">Balance levels: {% if levels %}{{ levels|join(", ") }}{% else %}none{% endif %}
  {%- if fired %} · fired, re-armed when the free balance is back above: {{ fired|join(", ") }}{% endif %}
  {%- if depleted %} · depleted sent{% endif %}<br>
  <small class="muted">{% if watched %}Watched: an enabled endpoint subscribes to a balance event.
  {%- else %}Not watched: no enabled endpoint subscribes to a balance event.{% endif %}</small></p>
<h3>Endpoints</h3>
{% if endpoints %}
<div class="scroll"><table class="list" id="alerts-endpoints">
  <thead><tr><th>URL</th><th>Status</th><th>Events</th><th>Created (UTC)</th><th></th></tr></thead>
  <tbody>
  {% for e in endpoints %}
    <tr data-endpoint="{{ e.id }}">
      <td class="mono small" title="{{ e.url }}">{{ e.url|truncate(short, true, "…") }}
        {% if e.description %}<br><span class="muted" title="{{ e.description }}">
          {{- e.description|truncate(short, true, "…") }}</span>{% endif %}</td>
      <td><span class="tag {{ 'verified' if e.enabled else 'blocked' }}">{{ e.status }}</span>
        {% if e.disabled_reason %}<br><small class="muted">{{ e.disabled_reason }}</small>{% endif %}</td>
      <td class="small">{{ e.events }}</td>
      <td class="mono">{{ e.created }}</td>
      <td>{% if e.enabled %}<a class="button small danger"
          href="{{ base }}/disable-endpoint?endpoint={{ e.id }}">Disable</a>
        {% else %}<a class="button small"
          href="{{ base }}/enable-endpoint?endpoint={{ e.id }}">Enable</a>{% endif %}</td></tr>
  {% endfor %}
  </tbody>
</table></div>
{% else %}
<p class="muted">No webhook endpoint: the organization registers them with POST /v1/webhooks.</p>
{% endif %}
<h3>Recent deliveries</h3>
{% if deliveries %}
<div class="scroll"><table class="list" id="alerts-deliveries">
  <thead><tr><th>Queued (UTC)</th><th>Event</th><th>Endpoint</th><th>Outcome</th>
    <th class="num">Attempts</th><th class="num">Last HTTP</th><th>Next retry (UTC)</th><th></th></tr></thead>
  <tbody>
  {% for d in deliveries %}
    <tr data-delivery="{{ d.id }}"><td class="mono">{{ d.created }}</td><td>{{ d.event }}</td>
      <td class="mono small" title="{{ d.url }}">{{ d.url|truncate(short, true, "…") }}</td>
      <td>{{ d.outcome }}{% if d.error %}<br><small class="muted">{{ d.error }}</small>{% endif %}</td>
      <td class="num">{{ d.attempts }}</td><td class="num">{{ d.last_status }}</td>
      <td class="mono">{{ d.next_attempt }}</td>
      <td>{% if d.replayable %}<a class="button small"
          href="{{ base }}/replay?delivery={{ d.id }}">Replay</a>{% endif %}</td></tr>
  {% endfor %}
  </tbody>
</table></div>
{% else %}<p class="muted">No delivery yet.</p>{% endif %}
"""


def _when(moment: datetime.datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _outcome(row: store.DeliveryRow) -> str:
    """What the operator reads: delivered, failed, retrying (attempted, another attempt is due),
    queued (not attempted yet, or replayed)."""
    if row.status != "pending":
        return row.status
    return "retrying" if row.attempts else "queued"


def _id(values: Mapping[str, str], name: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(values.get(name, "").strip())
    except ValueError:
        raise ValidationFailed(f"{name} must be a {what}'s id", field=name) from None


def _endpoint_state(row: store.EndpointRow) -> dict[str, Any]:
    return {"url": row.url, "status": row.status, "disabled_reason": row.disabled_reason}


async def alerts_panel(org_id: uuid.UUID, state: PluginState) -> list[DashboardPanel]:
    config: AlertsConfig = state.plugin_config(PLUGIN)
    async with state.db.reading() as conn:
        hooks = await store.list_endpoints(conn, org_id)
        recent = await store.list_deliveries(conn, org_id, None, limit=RECENT)
        levels = await store.get_levels(conn, org_id, config.default_levels)
        watched = await store.watches_balance(conn, org_id)
        account = await state.ledger.account(org_id, conn=conn)
    found = state.config.currencies.get(account.currency.lower())
    units = found.minor_units if found is not None else 2

    def money(cents: int) -> str:
        return f"{account.currency.upper()} {format_minor(cents, units)}"

    urls = {e.id: e.url for e in hooks}
    enabled = {e.id for e in hooks if e.status == "enabled"}
    shown_endpoints = [
        {
            "id": e.id,
            "url": e.url,
            "description": e.description,
            "status": e.status,
            "enabled": e.status == "enabled",
            "disabled_reason": e.disabled_reason,
            "events": "every event" if ev.EVERYTHING in e.events else ", ".join(e.events),
            "created": _when(e.created_at),
        }
        for e in hooks
    ]
    shown_deliveries = [
        {
            "id": d.id,
            "created": _when(d.created_at),
            "event": d.event,
            "url": urls.get(d.endpoint_id, str(d.endpoint_id)),
            "outcome": _outcome(d),
            "error": d.last_error if d.status != "delivered" else None,
            "attempts": d.attempts,
            "last_status": (d.status_codes[-1] or "no answer") if d.status_codes else "—",
            "next_attempt": _when(d.next_attempt_at) if d.status == "pending" else "—",
            "replayable": d.status != "pending" and d.endpoint_id in enabled,
        }
        for d in recent
    ]

    def choices(wanted: bool) -> list[tuple[str, str]]:
        return [(str(e.id), e.url) for e in hooks if (e.status == "enabled") == wanted]

    async def set_status(call: ActionCall, status: str, reason: str | None) -> ActionResult:
        endpoint_id = _id(call.values, "endpoint", "webhook endpoint")
        await state.ledger.lock(call.conn, call.org_id)  # first, as change_endpoint takes it
        before = await store.get_endpoint(call.conn, call.org_id, endpoint_id, lock=True)
        after = await store.change_endpoint(
            call.conn, state.ledger, call.org_id, endpoint_id, status=status, disabled_reason=reason
        )
        return ActionResult(
            message=f"Webhook endpoint {after.url} {status}.",
            before=_endpoint_state(before),
            after=_endpoint_state(after),
            target=f"webhook_endpoint:{endpoint_id}",
        )

    async def disable(call: ActionCall) -> ActionResult:
        return await set_status(call, "disabled", "operator")

    async def enable(call: ActionCall) -> ActionResult:
        return await set_status(call, "enabled", None)

    async def replay(call: ActionCall) -> ActionResult:
        delivery_id = _id(call.values, "delivery", "delivery")
        before = await store.get_delivery(call.conn, call.org_id, delivery_id)
        after = await store.replay(call.conn, call.org_id, delivery_id)
        return ActionResult(
            message=f"Delivery {delivery_id} ({after.event}) queued again: the worker sends it shortly.",
            before={"status": before.status, "attempts": before.attempts},
            after={"status": after.status, "attempts": after.attempts},
            target=f"webhook_delivery:{delivery_id}",
        )

    actions = []
    if to_disable := choices(True):
        actions.append(
            DashboardAction(
                name="disable-endpoint",
                label="Disable a webhook endpoint",
                audit_action="webhook_endpoint.disabled",
                run=disable,
                fields=[
                    DashboardField(
                        name="endpoint", label="Endpoint", kind="select", required=True, choices=to_disable
                    )
                ],
                confirm=(
                    "Disable this endpoint: nothing is sent to it until it is enabled again (by you or "
                    "by the organization); its deliveries wait."
                ),
                danger=True,
            )
        )
    if to_enable := choices(False):
        actions.append(
            DashboardAction(
                name="enable-endpoint",
                label="Enable a webhook endpoint",
                audit_action="webhook_endpoint.enabled",
                run=enable,
                fields=[
                    DashboardField(
                        name="endpoint", label="Endpoint", kind="select", required=True, choices=to_enable
                    )
                ],
                confirm="Enable this endpoint: its waiting deliveries and new events are sent to it.",
            )
        )
    actions.append(
        DashboardAction(
            name="replay",
            label="Replay a delivery",
            audit_action="webhook_delivery.replayed",
            run=replay,
            fields=[
                DashboardField(
                    name="delivery",
                    label="Delivery id",
                    required=True,
                    help="A delivered or failed delivery: use its Replay button above",
                )
            ],
            confirm="Send this delivery again, with the same event id and body, on a fresh retry schedule.",
        )
    )
    return [
        DashboardPanel(
            title="Webhooks",
            template=TEMPLATE,
            context={
                "levels": [money(c) for c in sorted(levels.thresholds, reverse=True)],
                "fired": [money(c) for c in sorted(levels.fired, reverse=True)],
                "depleted": levels.depleted,
                "watched": watched,
                "endpoints": shown_endpoints,
                "deliveries": shown_deliveries,
                "base": f"/dashboard/organizations/{org_id}/panels/{PLUGIN}",
                "short": SHORT,
            },
            actions=actions,
        )
    ]
