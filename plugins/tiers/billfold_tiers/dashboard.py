"""The tiers plugin's panel on an organization's dashboard page: each tiered channel's step this
month, and two actions, pin a step (optionally until a date) and unpin. The dashboard draws the
forms, checks the session, the CSRF token and the reason, and writes the audit row
(``tier.pinned``, ``tier.unpinned``) in the transaction that ``run`` receives."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from billfold import (
    ActionCall,
    ActionResult,
    DashboardAction,
    DashboardField,
    DashboardPanel,
    ValidationFailed,
    now,
)
from billfold_tiers.service import Tiers, month_of

TEMPLATE = """
{% if tiers %}
<div class="scroll"><table class="list">
  <thead><tr><th>Channel</th><th>Step</th><th>How</th><th class="num">Units this month</th>
    <th>Next</th><th>Pinned until</th></tr></thead>
  <tbody>
  {% for t in tiers %}
    <tr><td>{{ t.channel }}</td><td>{{ t.current }}</td><td>{{ t.qualification_source }}</td>
      <td class="num">{{ t.volume_used }}</td>
      <td>{% if t.next_tier %}{{ t.next_tier }} at {{ t.next_threshold }}{% else %}top step{% endif %}</td>
      <td>{% if t.qualification_source == "manual" %}{{ t.pinned_until or "no end" }}
        {% else %}—{% endif %}</td></tr>
  {% endfor %}
  </tbody>
</table></div>
{% else %}<p class="muted">No channel has a tier ladder.</p>{% endif %}
"""


def _until(value: str) -> datetime.datetime | None:
    """The end of a pin: a date (the pin ends at its UTC midnight), or no end."""
    if not value.strip():
        return None
    try:
        day = datetime.date.fromisoformat(value.strip())
    except ValueError:
        raise ValidationFailed("until must be a date (YYYY-MM-DD)", field="until") from None
    return datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.UTC)


async def tiers_panel(org_id: uuid.UUID, state: Any) -> list[DashboardPanel]:
    tiers = Tiers(state)
    channels = list(tiers.config.channels)
    if not channels:
        return []
    month = month_of(now())
    async with state.db.reading() as conn:
        shown = [await tiers.tier(conn, org_id, name, month) for name in channels]
    steps = sorted({name for c in channels for name in tiers.known(c).names})

    async def pin(call: ActionCall) -> ActionResult:
        channel, step = call.values["channel"], call.values["step"]
        before = await tiers.tier(call.conn, call.org_id, channel, month_of(now()))
        await tiers.pin(
            call.conn, call.org_id, channel, step, _until(call.values.get("until", "")), call.reason
        )
        after = await tiers.tier(call.conn, call.org_id, channel, month_of(now()))
        return ActionResult(
            message=f"{channel} pinned to {step}.", before=before, after=after, target=f"tier:{channel}"
        )

    async def unpin(call: ActionCall) -> ActionResult:
        channel = call.values["channel"]
        before = await tiers.tier(call.conn, call.org_id, channel, month_of(now()))
        await tiers.unpin(call.conn, call.org_id, channel)
        after = await tiers.tier(call.conn, call.org_id, channel, month_of(now()))
        return ActionResult(
            message=f"{channel} unpinned: qualified by volume again.",
            before=before,
            after=after,
            target=f"tier:{channel}",
        )

    channel_field = DashboardField(
        name="channel", label="Channel", kind="select", required=True, choices=[(c, c) for c in channels]
    )
    return [
        DashboardPanel(
            title="Volume tiers",
            template=TEMPLATE,
            context={"tiers": shown},
            actions=[
                DashboardAction(
                    name="pin",
                    label="Pin a step",
                    audit_action="tier.pinned",
                    run=pin,
                    fields=[
                        channel_field,
                        DashboardField(
                            name="step",
                            label="Step",
                            kind="select",
                            required=True,
                            choices=[(s, s) for s in steps],
                        ),
                        DashboardField(name="until", label="Until (optional)", kind="date"),
                    ],
                    confirm="Pin this step: it is never moved automatically until the pin ends.",
                ),
                DashboardAction(
                    name="unpin",
                    label="Unpin",
                    audit_action="tier.unpinned",
                    run=unpin,
                    fields=[channel_field],
                    confirm="Unpin: from now on the step is qualified by volume again.",
                ),
            ],
        )
    ]
