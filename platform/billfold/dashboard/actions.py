"""The dashboard's actions: each a form, a review (what will happen) and, once confirmed, one call
to the same audited operator action the API uses (:class:`billfold.audit.actions.OperatorActions`),
with the dashboard session as ``who`` and the operator's reason. Plugins' actions
(:class:`billfold.DashboardAction`) run inside a transaction that writes their audit row too.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from billfold.audit.service import MAX_REASON_LENGTH, AuditActor, record_audit
from billfold.dashboard import queries
from billfold.dashboard.panels import ActionCall, DashboardAction, DashboardField, DashboardPanel
from billfold.errors import NotFound, ValidationFailed
from billfold.money import format_minor, major_to_minor
from billfold.orgs.schemas import AdjustmentIn, OverageIn, RefundIn, StatusIn
from billfold.orgs.service import OrgRow
from billfold.plugins import resolve
from billfold.usage.plans import PlanChange

if TYPE_CHECKING:
    from billfold.api.app import Billfold

logger = logging.getLogger("billfold.dashboard")

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """What an action knows when it reviews or runs: the organization and its currency's digits."""

    org: OrgRow
    minor_units: int
    free_cents: int

    def money(self, cents: int) -> str:
        return f"{self.org.currency.upper()} {format_minor(cents, self.minor_units)}"


class FormAction(msgspec.Struct, frozen=True, kw_only=True):
    """An action as the dashboard draws and runs it."""

    key: str
    label: str
    fields: Sequence[DashboardField]
    review: Callable[[Mapping[str, str], Context], str]
    """Checks the values (raise ValidationFailed) and says what confirming will do."""
    perform: Callable[[AuditActor, Mapping[str, str], str, Context], Awaitable[str]]
    danger: bool = False
    plugin: str | None = None


def _convert(data: dict[str, Any], kind: type[Any]) -> Any:
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = re.search(r"at `\$\.([A-Za-z_]+)", message)
        raise ValidationFailed(message, field=match.group(1) if match else None) from None


def _amount(values: Mapping[str, str], ctx: Context, name: str = "amount") -> int:
    raw = values.get(name, "").strip()
    if not raw:
        raise ValidationFailed(f"{name} is required", field=name)
    if len(raw) > 24:
        raise ValidationFailed(f"{name} is too long", field=name)
    return major_to_minor(raw, ctx.minor_units, field=name)


def check_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise ValidationFailed("a reason is required: it is recorded in the audit trail", field="reason")
    if len(reason) > MAX_REASON_LENGTH or "\x00" in reason:
        raise ValidationFailed(f"the reason must be at most {MAX_REASON_LENGTH} characters", field="reason")
    return reason


def _text(values: Mapping[str, str], name: str) -> str:
    return values.get(name, "").strip()


def core_actions(billfold: Billfold) -> dict[str, FormAction]:
    """The core's actions: adjustment, refund, key revocation, status, overage, plan (steps, caps)."""
    actions = billfold.actions
    plans = billfold.config.plans

    def adjustment(values: Mapping[str, str], ctx: Context) -> AdjustmentIn:
        return _convert(
            {"amount_cents": _amount(values, ctx), "description": _text(values, "description")}, AdjustmentIn
        )

    def review_adjust(values: Mapping[str, str], ctx: Context) -> str:
        data = adjustment(values, ctx)
        verb = "Credit" if data.amount_cents > 0 else "Debit"
        after = ctx.free_cents + data.amount_cents
        return (
            f"{verb} {ctx.money(abs(data.amount_cents))} to {ctx.org.name} "
            f"(free balance {ctx.money(ctx.free_cents)} → {ctx.money(after)}), described as "
            f"“{data.description}”."
        )

    async def adjust(actor: AuditActor, values: Mapping[str, str], reason: str, ctx: Context) -> str:
        data = adjustment(values, ctx)
        posted = await actions.adjust(
            actor, ctx.org.id, data.amount_cents, description=data.description, reason=reason
        )
        free = ctx.money(posted.account.free_cents)
        return f"Adjusted by {ctx.money(data.amount_cents)}: free balance {free}."

    def refund_in(values: Mapping[str, str], ctx: Context) -> RefundIn:
        return _convert(
            {
                "amount_cents": _amount(values, ctx),
                "description": _text(values, "description"),
                "reference": _text(values, "reference") or None,
            },
            RefundIn,
        )

    def review_refund(values: Mapping[str, str], ctx: Context) -> str:
        data = refund_in(values, ctx)
        return (
            f"Record a refund of {ctx.money(data.amount_cents)} paid to {ctx.org.name} outside Billfold "
            f"(free balance {ctx.money(ctx.free_cents)} → {ctx.money(ctx.free_cents - data.amount_cents)})."
        )

    async def refund(actor: AuditActor, values: Mapping[str, str], reason: str, ctx: Context) -> str:
        data = refund_in(values, ctx)
        posted = await actions.refund(
            actor,
            ctx.org.id,
            data.amount_cents,
            description=data.description,
            reference=data.reference,
            reason=reason,
        )
        return f"Refund recorded: free balance {ctx.money(posted.account.free_cents)}."

    def key_id(values: Mapping[str, str]) -> uuid.UUID:
        try:
            return uuid.UUID(_text(values, "key_id"))
        except ValueError:
            raise ValidationFailed("key_id must be an API key's id", field="key_id") from None

    def review_revoke(values: Mapping[str, str], ctx: Context) -> str:
        return f"Revoke API key {key_id(values)} of {ctx.org.name}: requests with it answer 401 at once."

    async def revoke(actor: AuditActor, values: Mapping[str, str], reason: str, ctx: Context) -> str:
        found = key_id(values)
        async with billfold.db.reading() as conn:
            owner = await queries.key_owner(conn, found)
        if owner != ctx.org.id:
            raise NotFound(f"{ctx.org.name} has no API key {found}", code="key_not_found", field="key_id")
        await actions.revoke_key(actor, found, reason=reason)
        return f"API key {found} revoked."

    def status_in(values: Mapping[str, str]) -> StatusIn:
        return _convert({"status": _text(values, "status")}, StatusIn)

    def review_status(values: Mapping[str, str], ctx: Context) -> str:
        data = status_in(values)
        extra = " Its usage and charges will be refused." if data.status == "blocked" else ""
        return f"Set {ctx.org.name}'s status from {ctx.org.status} to {data.status}.{extra}"

    async def set_status(actor: AuditActor, values: Mapping[str, str], reason: str, ctx: Context) -> str:
        org = await actions.set_status(actor, ctx.org.id, status_in(values).status, reason=reason)
        return f"Status set to {org.status}."

    def overage_in(values: Mapping[str, str], ctx: Context) -> OverageIn:
        return _convert({"overage_limit_cents": _amount(values, ctx, "overage_limit")}, OverageIn)

    def review_overage(values: Mapping[str, str], ctx: Context) -> str:
        data = overage_in(values, ctx)
        return f"Let {ctx.org.name}'s free balance go down to {ctx.money(-data.overage_limit_cents)}."

    async def set_overage(actor: AuditActor, values: Mapping[str, str], reason: str, ctx: Context) -> str:
        account = await actions.set_overage(
            actor, ctx.org.id, overage_in(values, ctx).overage_limit_cents, reason=reason
        )
        return f"Overage limit set to {ctx.money(account.overage_limit_cents)}."

    def plan_change(values: Mapping[str, str], ctx: Context) -> PlanChange:
        data: dict[str, Any] = {}
        for ladder in ("message_step", "budget_step"):
            if step := _text(values, ladder):
                data[ladder] = step
        if (overage := _text(values, "allow_overage")) in ("yes", "no"):
            data["allow_overage"] = overage == "yes"
        for cap in ("messages_cap", "cost_cap", "sms_cap", "call_cap"):
            raw = _text(values, cap)
            if not raw:
                continue
            if raw.lower() == "default":
                data[cap] = None
            elif cap == "messages_cap":
                if not raw.isdigit() or len(raw) > 15:
                    raise ValidationFailed(f"{cap} must be a whole number of messages", field=cap)
                data[cap] = int(raw)
            else:
                data[cap] = _amount(values, ctx, cap)
        if _text(values, "immediate") == "on":
            data["immediate"] = True
        if not set(data) - {"immediate"}:
            raise ValidationFailed(
                "change at least one step, cap or the overage setting", field="message_step"
            )
        return _convert(data, PlanChange)

    def review_plan(values: Mapping[str, str], ctx: Context) -> str:
        change = plan_change(values, ctx)
        said = []
        for name in PlanChange.__struct_fields__:
            value = getattr(change, name)
            if name in ("reason", "immediate") or value is msgspec.UNSET:
                continue
            if name.endswith("_cap") and name != "messages_cap" and value is not None:
                value = ctx.money(value)
            shown = "the step's default" if value is None else value
            said.append(f"{name.replace('_', ' ')}: {shown}")
        when = " now" if change.immediate else " (a downgrade waits for the next anniversary)"
        return f"Change {ctx.org.name}'s plan{when}: " + "; ".join(said) + "."

    async def change_plan(actor: AuditActor, values: Mapping[str, str], reason: str, ctx: Context) -> str:
        plan = await actions.change_plan(actor, ctx.org.id, plan_change(values, ctx), reason=reason)
        return f"Plan: message step {plan.message_step}, budget step {plan.budget_step}."

    keep = [("", "(keep)")]
    return {
        a.key: a
        for a in (
            FormAction(
                key="adjust",
                label="Adjust the balance",
                fields=[
                    DashboardField(
                        name="amount",
                        label="Amount (positive credits, negative debits)",
                        kind="number",
                        required=True,
                        help="In the currency's major units, e.g. 12.50",
                    ),
                    DashboardField(
                        name="description", label="Description (the tenant sees it)", required=True
                    ),
                ],
                review=review_adjust,
                perform=adjust,
            ),
            FormAction(
                key="refund",
                label="Record a refund",
                fields=[
                    DashboardField(name="amount", label="Amount refunded", kind="number", required=True),
                    DashboardField(name="description", label="Description", required=True),
                    DashboardField(name="reference", label="Reference (e.g. the bank transfer's)"),
                ],
                review=review_refund,
                perform=refund,
                danger=True,
            ),
            FormAction(
                key="revoke-key",
                label="Revoke an API key",
                fields=[DashboardField(name="key_id", label="Key id", required=True)],
                review=review_revoke,
                perform=revoke,
                danger=True,
            ),
            FormAction(
                key="status",
                label="Set the status",
                fields=[
                    DashboardField(
                        name="status",
                        label="Status",
                        kind="select",
                        required=True,
                        choices=[
                            ("verified", "verified"),
                            ("unverified", "unverified"),
                            ("blocked", "blocked"),
                        ],
                    )
                ],
                review=review_status,
                perform=set_status,
                danger=True,
            ),
            FormAction(
                key="overage",
                label="Set the overage limit",
                fields=[
                    DashboardField(
                        name="overage_limit",
                        label="How far below zero the free balance may go",
                        kind="number",
                        required=True,
                    )
                ],
                review=review_overage,
                perform=set_overage,
            ),
            FormAction(
                key="plan",
                label="Set steps and caps",
                fields=[
                    DashboardField(
                        name="message_step",
                        label="Message step",
                        kind="select",
                        choices=[*keep, *((s, s) for s in plans.message)],
                    ),
                    DashboardField(
                        name="budget_step",
                        label="Budget step",
                        kind="select",
                        choices=[*keep, *((s, s) for s in plans.budget)],
                    ),
                    DashboardField(
                        name="allow_overage",
                        label="Usage past the caps",
                        kind="select",
                        choices=[*keep, ("yes", "allowed (paid steps)"), ("no", "refused")],
                    ),
                    DashboardField(
                        name="messages_cap",
                        label="Messages cap",
                        help="A count; empty keeps, “default” takes the step's",
                    ),
                    DashboardField(
                        name="cost_cap",
                        label="Cost cap",
                        help="Major units; empty keeps, “default” takes the step's",
                    ),
                    DashboardField(name="sms_cap", label="SMS cap"),
                    DashboardField(name="call_cap", label="Call cap"),
                    DashboardField(name="immediate", label="Apply a downgrade now", kind="checkbox"),
                ],
                review=review_plan,
                perform=change_plan,
            ),
        )
    }


# -- plugins' panels ------------------------------------------------------------------------------------


class PluginPanel(msgspec.Struct, frozen=True, kw_only=True):
    plugin: str
    panel: DashboardPanel | None
    error: str | None = None


async def plugin_panels(billfold: Billfold, org_id: uuid.UUID) -> list[PluginPanel]:
    """Every implementation's panels, with the plugin that gave them (a failing plugin shows its
    error in place of its panels; the page still renders)."""
    found: list[PluginPanel] = []
    arguments = {"org_id": org_id, "state": billfold.hook_state}
    for impl in reversed(billfold.pm.hook.billfold_dashboard_panels.get_hookimpls()):
        try:
            answer = await resolve(impl.function(*(arguments[a] for a in impl.argnames)))
        except Exception:
            logger.exception("billfold_dashboard_panels of %s failed", impl.plugin_name)
            found.append(
                PluginPanel(plugin=impl.plugin_name, panel=None, error="This plugin's panel failed.")
            )
            continue
        for panel in answer or ():
            found.append(PluginPanel(plugin=impl.plugin_name, panel=panel))
    return found


def plugin_action(billfold: Billfold, plugin: str, action: DashboardAction) -> FormAction:
    """A plugin's action as a form: required fields and choices are checked here; ``run`` runs in a
    transaction with the action's audit row."""

    def review(values: Mapping[str, str], ctx: Context) -> str:
        for field in action.fields:
            value = values.get(field.name, "")
            if field.required and not value.strip():
                raise ValidationFailed(f"{field.label} is required", field=field.name)
            if field.kind == "select" and value and value not in {c for c, _ in field.choices}:
                raise ValidationFailed(f"{field.label}: choose one of the options", field=field.name)
        return action.confirm

    async def perform(actor: AuditActor, values: Mapping[str, str], reason: str, ctx: Context) -> str:
        review(values, ctx)
        async with billfold.db.transaction() as conn:
            result = await action.run(
                ActionCall(conn=conn, org_id=ctx.org.id, values=dict(values), reason=reason, who=actor.who)
            )
            await record_audit(
                conn,
                actor,
                action.audit_action,
                org_id=ctx.org.id,
                target=result.target,
                before=result.before,
                after=result.after,
                reason=reason,
            )
        return result.message

    return FormAction(
        key=action.name,
        label=action.label,
        fields=action.fields,
        review=review,
        perform=perform,
        danger=action.danger,
        plugin=plugin,
    )


async def find_plugin_action(
    billfold: Billfold, org_id: uuid.UUID, plugin: str, name: str
) -> FormAction | None:
    for item in await plugin_panels(billfold, org_id):
        if item.plugin != plugin or item.panel is None:
            continue
        for action in item.panel.actions:
            if action.name == name and NAME.match(name):
                return plugin_action(billfold, plugin, action)
    return None


def form_values(form: Mapping[str, Any], fields: Sequence[DashboardField]) -> dict[str, str]:
    """The declared fields' values from a submitted form (strings, at most 1000 characters each)."""
    values = {}
    for field in fields:
        value = form.get(field.name, "")
        value = value if isinstance(value, str) else ""
        if len(value) > 1000:
            raise ValidationFailed(f"{field.label} is too long", field=field.name)
        values[field.name] = value
    return values
