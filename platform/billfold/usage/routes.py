"""Usage routes: report priced usage (one event, a batch, two-phase sends), read usage reports in
each family's words, and the operator's plan controls."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post, put
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.types import Scope

from billfold.api import examples
from billfold.api import family_002 as f002
from billfold.api import family_004 as f004
from billfold.api.auth import OrgScope, TenantController, operator_guard
from billfold.api.openapi import responses
from billfold.api.params import INSTANT, anchored, parse_instant
from billfold.api.writes import REPLAY_HEADER
from billfold.audit.actions import OperatorActions
from billfold.audit.service import AuditActor
from billfold.clock import now
from billfold.config import ChannelConfig, CurrencyConfig
from billfold.errors import ValidationFailed
from billfold.ledger.routes import minor_units
from billfold.ledger.service import LedgerService
from billfold.metrics import USAGE_OUTCOMES
from billfold.orgs.service import OrgService
from billfold.payments.profiles import ProfileService
from billfold.usage.close import parse_period, period_of
from billfold.usage.plans import Plan, PlanChange, PlanService
from billfold.usage.reports import GROUPS, GroupBy, UsageReports, month_bounds
from billfold.usage.schemas import BatchIn, BatchOut, PlanOut, SettleIn, UsageIn, UsageOut
from billfold.usage.service import UsageService

Currencies = Mapping[str, CurrencyConfig]
Channels = Mapping[str, ChannelConfig]

SHAPE = Annotated[
    str | None,
    HeaderParameter(
        name="Billfold-Shape",
        required=False,
        max_length=16,
        description="`004`: answer (and refuse) in document 004's shapes (major units, its 402 body); "
        "without it, or with any other value, Billfold's own.",
    ),
]
USAGE_OPT = {"shape_header": True}
"""Errors of these routes take 004's envelope when the request asks for 004's shapes."""


def shaped(out: UsageOut, shape: str | None, currencies: Currencies) -> Any:
    if shape != f004.FAMILY:
        return out
    billing = out.billing
    return f004.UsageAccepted(
        usage_id=str(out.usage_id),
        event_id=out.event_id,
        status=out.status,
        billing=f004.usage_billing(
            channel=billing.channel,
            message_type=billing.message_type,
            amount_cents=billing.amount_cents,
            reserved=out.status == "reserved",
            free=billing.balance.free,
            reserved_cents=billing.balance.reserved,
            total=billing.balance.total,
            tier=billing.tier,
            minor_units=minor_units(currencies, billing.currency),
        ),
    )


_ACCEPTED = {
    200: ResponseSpec(
        data_container=UsageOut | f004.UsageAccepted,
        description="A repeat of an event_id: the first answer",
        generate_examples=False,
    ),
}


class UsageController(TenantController):
    path = "/v1/usage"
    tags = ["usage"]
    opt = USAGE_OPT

    @post(
        "/",
        operation_id="ReportUsage",
        summary="Report one usage event: priced from billing.yaml, capped, debited (or held)",
        description="`event_id` is unique per organization: a repeat with the same body answers 200 "
        "with the first result (`Idempotent-Replayed: true`) and debits nothing; another body is 409. "
        "A refused event (402) is not stored: a retry runs again.",
        responses={**responses(402, 404, 409, body=True, family="shaped"), **_ACCEPTED},
        operation_class=examples.USAGE,
    )
    async def report(
        self,
        data: JSONBody[UsageIn],
        org: NamedDependency[OrgScope],
        usage: NamedDependency[UsageService],
        currencies: NamedDependency[Currencies],
        shape: SHAPE = None,
    ) -> Response[UsageOut | f004.UsageAccepted]:
        recorded = await usage.record(org.org_id, data)
        return Response(
            shaped(recorded.result, shape, currencies),
            status_code=200 if recorded.replayed else 201,
            headers={REPLAY_HEADER: "true"} if recorded.replayed else None,
        )

    @post(
        "/batch",
        operation_id="ReportUsageBatch",
        description=(
            "Up to 1000 events in one request; each is priced and debited on its own and gets its own"
            " answer (accepted, replayed or refused with its error), in order. The request itself is "
            "200 unless it does not decode."
        ),
        summary="Report up to 1000 events; each is accepted, replayed or refused on its own",
        status_code=200,
        responses=responses(404, body=True, family="shaped"),
    )
    async def batch(
        self,
        scope: Scope,
        data: JSONBody[BatchIn],
        org: NamedDependency[OrgScope],
        usage: NamedDependency[UsageService],
        currencies: NamedDependency[Currencies],
        shape: SHAPE = None,
    ) -> BatchOut:
        results = []
        for result, out in await usage.record_batch(org.org_id, data.events):
            if out is not None:
                billing = shaped(out, shape, currencies).billing
                result = msgspec.structs.replace(result, billing=msgspec.to_builtins(billing))
            results.append(result)
        # each event's outcome, for the metrics (counted where the route answers)
        scope[USAGE_OUTCOMES] = [(r.status, r.code) for r in results]  # type: ignore[literal-required]
        return BatchOut(results=results)

    @post(
        "/{usage_id:uuid}/settle",
        operation_id="SettleUsage",
        description=(
            "Ends a reserved send: `delivered` captures the held amount (for a `quantity` at most the"
            " reserved one), `failed` releases it. Settling twice is 409."
        ),
        summary="Settle a reserved send: delivered captures (quantity at most the reserved), failed releases",
        status_code=200,
        responses=responses(404, 409, body=True, family="shaped"),
    )
    async def settle(
        self,
        usage_id: FromPath[uuid.UUID],
        data: JSONBody[SettleIn],
        org: NamedDependency[OrgScope],
        usage: NamedDependency[UsageService],
        currencies: NamedDependency[Currencies],
        shape: SHAPE = None,
    ) -> UsageOut | f004.UsageAccepted:
        return shaped(await usage.settle(org.org_id, usage_id, data), shape, currencies)

    @get(
        "/{usage_id:uuid}",
        operation_id="GetUsage",
        description=(
            "One usage event as it was last answered: its price, status (debited, reserved, settled, "
            "released) and transaction."
        ),
        summary="One usage event as last answered",
        responses=responses(404, family="shaped"),
    )
    async def get_usage(
        self,
        usage_id: FromPath[uuid.UUID],
        org: NamedDependency[OrgScope],
        usage: NamedDependency[UsageService],
        currencies: NamedDependency[Currencies],
        shape: SHAPE = None,
    ) -> UsageOut | f004.UsageAccepted:
        return shaped(await usage.get(org.org_id, usage_id), shape, currencies)


# -- document 004's reports -------------------------------------------------------------------------

MONTH = r"^(?!0000)\d{4}-(0[1-9]|1[0-2])$"
DATE = r"^(?!0000)\d{4}-\d{2}-\d{2}$"
MAX_DETAILED_DAYS = 366


def _date(value: str, field: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(f"{field} must be a date written YYYY-MM-DD", field=field) from None


class UsageReports004Controller(TenantController):
    path = "/v1/billing/usage"
    tags = ["billing (004)"]
    opt = f004.OPT

    @get(
        "/",
        operation_id="GetMonthUsage",
        description="A UTC month's usage per channel: billed units and cost in major units.",
        summary="A UTC month's usage per channel (billed units, major units)",
        responses=responses(404, family="004"),
    )
    async def month(
        self,
        org: NamedDependency[OrgScope],
        reports: NamedDependency[UsageReports],
        ledger: NamedDependency[LedgerService],
        currencies: NamedDependency[Currencies],
        month: Annotated[
            str | None, QueryParameter(pattern=MONTH, description="YYYY-MM (UTC); default this month")
        ] = None,
    ) -> f004.MonthUsage:
        period = month or period_of(now())
        parse_period(period, "month")
        first, last = month_bounds(period)
        currency = (await ledger.account(org.org_id)).currency
        units = minor_units(currencies, currency)
        rows = await reports.grouped(org.org_id, first, last, "channel")
        tiers = await reports.tiers(org.org_id, [r.key for r in rows], period)
        return f004.MonthUsage(
            month=period,
            currency=f004.currency_code(currency),
            channels=[
                f004.ChannelUsage(
                    channel=r.key,
                    quantity=r.quantity,
                    amount=f004.major(r.amount_cents, units),
                    tier=tiers.get(r.key),
                )
                for r in rows
            ],
        )

    @get(
        "/detailed",
        operation_id="GetDetailedUsage",
        description=(
            "Usage between two UTC dates (inclusive, at most 366 days), grouped by day, channel or "
            "message type, in major units."
        ),
        summary="Usage between two UTC dates (inclusive, at most 366 days), grouped",
        responses=responses(404, family="004"),
    )
    async def detailed(
        self,
        org: NamedDependency[OrgScope],
        reports: NamedDependency[UsageReports],
        ledger: NamedDependency[LedgerService],
        currencies: NamedDependency[Currencies],
        from_: Annotated[
            str | None,
            QueryParameter(
                name="from", pattern=DATE, description="YYYY-MM-DD; default the 1st of this month"
            ),
        ] = None,
        to: Annotated[
            str | None, QueryParameter(pattern=DATE, description="YYYY-MM-DD; default today")
        ] = None,
        group_by: Annotated[
            GroupBy, QueryParameter(description="channel, message_type, category or day")
        ] = "channel",
    ) -> f004.DetailedUsage:
        today = now().date()
        first = _date(from_, "from") if from_ else today.replace(day=1)
        last = _date(to, "to") if to else today
        if last < first:
            raise ValidationFailed("to must not be before from", field="to")
        if (last - first).days + 1 > MAX_DETAILED_DAYS:
            raise ValidationFailed(f"at most {MAX_DETAILED_DAYS} days between from and to", field="to")
        if group_by not in GROUPS:
            raise ValidationFailed(f"group_by must be one of: {', '.join(GROUPS)}", field="group_by")
        currency = (await ledger.account(org.org_id)).currency
        units = minor_units(currencies, currency)
        rows = await reports.grouped(org.org_id, first, last, group_by)
        return f004.DetailedUsage(
            from_=first.isoformat(),
            to=last.isoformat(),
            group_by=group_by,
            currency=f004.currency_code(currency),
            rows=[
                f004.UsageRow(key=r.key, quantity=r.quantity, amount=f004.major(r.amount_cents, units))
                for r in rows
            ],
        )


# -- document 002's report and reminder --------------------------------------------------------------


class Usage002Controller(TenantController):
    path = "/v1/organizations/{organization_id:str}/usage"
    tags = ["billing (002)"]
    opt = f002.OPT

    @get(
        "/",
        operation_id="GetOrganizationUsage",
        description=(
            "Usage of one category over a window (inclusive, at most 92 days), in decimillicents "
            "(document 002)."
        ),
        summary="Usage of one category over a window (inclusive, at most 92 days; decimillicents)",
        responses=responses(403, 404, family="002"),
    )
    async def usage(
        self,
        organization_id: FromPath[str],
        org: NamedDependency[OrgScope],
        reports: NamedDependency[UsageReports],
        channels: NamedDependency[Channels],
        category: Annotated[
            str,
            QueryParameter(
                max_length=64,
                description="One of the product's categories (text_generation, image_generation, "
                "video_generation, storage, openrouter_inference, workflow_execution, api_call) or a "
                "channel of billing.yaml",
            ),
        ],
        period_start: Annotated[
            str | None, QueryParameter(name="periodStart", max_length=40, pattern=anchored(INSTANT))
        ] = None,
        period_end: Annotated[
            str | None, QueryParameter(name="periodEnd", max_length=40, pattern=anchored(INSTANT))
        ] = None,
    ) -> f002.UsageReport:
        if category not in f002.PRODUCT_CATEGORIES and category not in channels:
            names = ", ".join([*f002.PRODUCT_CATEGORIES, *channels])
            raise ValidationFailed(f"category must be one of: {names}", field="category")
        end = parse_instant(period_end, "periodEnd", end_of_day=True) or now()
        start = parse_instant(period_start, "periodStart") or end - datetime.timedelta(days=30)
        if end < start:
            raise ValidationFailed("periodEnd is before periodStart", field="periodEnd")
        if end - start > datetime.timedelta(days=f002.MAX_USAGE_WINDOW_DAYS):
            raise ValidationFailed(
                f"the window is longer than {f002.MAX_USAGE_WINDOW_DAYS} days", field="periodEnd"
            )
        by_channel = category in channels and category not in f002.PRODUCT_CATEGORIES
        total = await reports.total(
            org.org_id,
            start.astimezone(datetime.UTC).date(),
            end.astimezone(datetime.UTC).date(),
            channel=category if by_channel else None,
            category=None if by_channel else category,
        )
        return f002.UsageReport(
            organization_id=org.org_id,
            category=category,
            period_start=start.isoformat(),
            period_end=end.isoformat(),
            total_quantity=total.raw_quantity,
            total_cost_decimillicents=f002.to_decimillicents(total.amount_cents),
        )


async def _reminder(
    org: OrgScope, plan_service: PlanService, orgs: OrgService, profiles: ProfileService, *, dismiss: bool
) -> f002.NoCapReminder:
    found = await orgs.get(org.org_id)
    read = plan_service.dismiss_reminder if dismiss else plan_service.get
    plan = await read(org.org_id, found.created_at)
    profile = await profiles.get(org.org_id)
    return f002.NoCapReminder(
        dismissed=plan.no_cap_reminder_dismissed, usage_cap_set=profile.usage_cap_cents is not None
    )


class NoCapReminderController(TenantController):
    path = "/v1/billing/{organization_id:str}/no-cap-reminder"
    tags = ["billing (002)"]
    opt = f002.OPT

    @get(
        "/",
        operation_id="GetNoCapReminder",
        description="Whether the organization dismissed the reminder to set a spend cap.",
        summary="Whether the no-spend-cap reminder was dismissed",
        responses=responses(403, 404, family="002"),
    )
    async def reminder(
        self,
        organization_id: FromPath[str],
        org: NamedDependency[OrgScope],
        plan_service: NamedDependency[PlanService],
        orgs: NamedDependency[OrgService],
        profiles: NamedDependency[ProfileService],
    ) -> f002.NoCapReminder:
        return await _reminder(org, plan_service, orgs, profiles, dismiss=False)

    @post(
        "/dismiss",
        operation_id="DismissNoCapReminder",
        description="Dismisses the reminder to set a spend cap, for good. Dismissing again answers the same.",
        summary="Dismiss the reminder (permanent, idempotent)",
        status_code=200,
        responses=responses(403, 404, family="002"),
    )
    async def dismiss(
        self,
        organization_id: FromPath[str],
        org: NamedDependency[OrgScope],
        plan_service: NamedDependency[PlanService],
        orgs: NamedDependency[OrgService],
        profiles: NamedDependency[ProfileService],
    ) -> f002.NoCapReminder:
        return await _reminder(org, plan_service, orgs, profiles, dismiss=True)


# -- the operator ------------------------------------------------------------------------------------


def plan_out(plan: Plan, counters: dict[str, int]) -> PlanOut:
    return PlanOut(
        org_id=plan.org_id,
        message_step=plan.message_step,
        budget_step=plan.budget_step,
        anniversary=plan.anniversary,
        allow_overage=plan.allow_overage,
        messages_cap=plan.messages_cap,
        cost_cap=plan.cost_cap,
        sms_cap=plan.sms_cap,
        call_cap=plan.call_cap,
        pending_message_step=plan.pending_message_step,
        pending_budget_step=plan.pending_budget_step,
        pending_effective=plan.pending_effective,
        cycle_start=plan.cycle_start,
        cycle_end=plan.cycle_end,
        counters=counters,
    )


class AdminPlanController(Controller):
    path = "/v1/admin/organizations/{org_id:uuid}/plan"
    tags = ["operator"]
    guards = [operator_guard]

    @get(
        "/",
        operation_id="AdminGetPlan",
        description=(
            "The organization's message and budget plan steps, caps, billing cycle anniversary and "
            "this cycle's counters. Operator key."
        ),
        summary="An organization's plan steps, caps, cycle and counters",
        responses=responses(404),
    )
    async def get_plan(
        self,
        org_id: FromPath[uuid.UUID],
        plan_service: NamedDependency[PlanService],
        orgs: NamedDependency[OrgService],
    ) -> PlanOut:
        found = await orgs.get(org_id)
        plan = await plan_service.get(org_id, found.created_at)
        return plan_out(plan, await plan_service.cycle_counters(org_id, plan.cycle_start))

    @put(
        "/",
        operation_id="AdminSetPlan",
        description=(
            "Sets plan steps (an upgrade applies at once, a downgrade at the next anniversary), caps,"
            " overage and the anniversary day. Operator key."
        ),
        summary="Set steps (upgrade at once, downgrade at the next anniversary), caps, overage, anniversary",
        responses=responses(404, body=True),
    )
    async def set_plan(
        self,
        org_id: FromPath[uuid.UUID],
        data: JSONBody[PlanChange],
        plan_service: NamedDependency[PlanService],
        actions: NamedDependency[OperatorActions],
        audit_actor: NamedDependency[AuditActor],
    ) -> PlanOut:
        plan = await actions.change_plan(audit_actor, org_id, data, reason=data.reason)
        return plan_out(plan, await plan_service.cycle_counters(org_id, plan.cycle_start))


USAGE_ROUTES = [
    UsageController,
    UsageReports004Controller,
    Usage002Controller,
    NoCapReminderController,
    AdminPlanController,
]
