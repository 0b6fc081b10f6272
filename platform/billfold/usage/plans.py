"""Plans and caps (document 003's two ladders and document 002's spend cap).

An organization holds a message step and a budget step, an anniversary (the cycle restarts on that
day of every month, clamped to the month's end), ``allow_overage``, optional caps the operator set
for it, and a pending downgrade. Counters are kept per cycle, so a new cycle starts from zero
without a reset job. Caps are checked and counted inside the usage write's transaction, after the
account row is locked: concurrent events of one organization are counted one after another.
"""

from __future__ import annotations

import calendar
import datetime
import uuid
from typing import Annotated, Any

import msgspec
from advanced_alchemy.types import GUID
from sqlalchemy import Date, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.clock import now
from billfold.config import PlansConfig, PlanStep
from billfold.db import Database, dialect_insert, table_of
from billfold.errors import PaymentRequired, ValidationFailed
from billfold.events.outbox import DomainEvent, emit
from billfold.fields import Reason
from billfold.hookspecs import hookimpl
from billfold.ledger.service import MAX_AMOUNT
from billfold.orgs.service import OrgService
from billfold.usage.models import UsageCounter, UsagePlan

plans_table = table_of(UsagePlan)
counters = table_of(UsageCounter)

# Constant statements, built and compiled once: a usage event runs them on every request, and
# building a Core statement per call (and compiling the dialects' INSERT ... ON CONFLICT, which
# SQLAlchemy does not cache) cost more CPU than running it (bench/run.py: 4.2 ms of server CPU
# per event before, against 0.3 ms for a charge).
_PLAN = select(plans_table).where(plans_table.c.org_id == bindparam("org_id"))
# All of the cycle's counters (a handful): an ``IN`` list of the names wanted is an expanding
# parameter, which SQLAlchemy renders anew on every execution (~0.6 ms of CPU per usage event
# under the profiler, against one more short row or two read here).
_COUNTERS = select(counters.c.counter, counters.c.value, counters.c.warned).where(
    counters.c.org_id == bindparam("org_id"), counters.c.cycle_start == bindparam("cycle_start")
)
_BUMPS: dict[int, Any] = {}
"""The counters' upsert for n rows at once, built once per n (an event moves 1 to 5 counters)."""


def _bump_statement(rows: int) -> Any:
    statement = _BUMPS.get(rows)
    if statement is None:
        values = ", ".join(
            f"(:org_id, :cycle_start, :counter{i}, :delta{i}, :warned{i})" for i in range(rows)
        )
        statement = _BUMPS[rows] = text(
            "INSERT INTO usage_counters (org_id, cycle_start, counter, value, warned) "
            f"VALUES {values} ON CONFLICT (org_id, cycle_start, counter) "
            "DO UPDATE SET value = usage_counters.value + excluded.value, warned = excluded.warned"
        ).bindparams(bindparam("org_id", type_=GUID()), bindparam("cycle_start", type_=Date()))
    return statement


WARNING_LEVELS = (80, 95, 100)
"""Percentages of a cap announced once per cycle each (``usage.cap_warning``; 100 is
``usage.cap_exceeded``)."""

CAP_CODES = {
    "messages": "messages_cap_exceeded",
    "cost": "cost_cap_exceeded",
    "sms": "sms_cap_exceeded",
    "call": "call_cap_exceeded",
    "spend": "usage_cap_exceeded",
    "unverified": "unverified_cap_exceeded",
}


def clamp_day(year: int, month: int, day: int) -> datetime.date:
    return datetime.date(year, month, min(day, calendar.monthrange(year, month)[1]))


def cycle_bounds(anniversary: datetime.date, today: datetime.date) -> tuple[datetime.date, datetime.date]:
    """The cycle containing ``today``: [start, next start). It starts on the anniversary's day of a
    month (clamped to that month's last day)."""
    day = anniversary.day
    start = clamp_day(today.year, today.month, day)
    if start > today:
        year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
        start = clamp_day(year, month, day)
    year, month = (start.year, start.month + 1) if start.month < 12 else (start.year + 1, 1)
    return start, clamp_day(year, month, day)


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """An organization's plan as it stands now (pending downgrade applied when due)."""

    org_id: uuid.UUID
    message_step: str
    budget_step: str
    anniversary: datetime.date
    allow_overage: bool
    messages_cap: int | None
    cost_cap: int | None
    sms_cap: int | None
    call_cap: int | None
    message_paid: bool
    budget_paid: bool
    pending_message_step: str | None
    pending_budget_step: str | None
    pending_effective: datetime.date | None
    cycle_start: datetime.date
    cycle_end: datetime.date
    no_cap_reminder_dismissed: bool

    def cap(self, name: str) -> int | None:
        return {
            "messages": self.messages_cap,
            "cost": self.cost_cap,
            "sms": self.sms_cap,
            "call": self.call_cap,
        }.get(name)

    def overage_allowed(self, name: str) -> bool:
        """Overage applies on paid steps only, and never to the spend cap or internal caps."""
        if not self.allow_overage:
            return False
        if name == "messages":
            return self.message_paid
        if name in ("cost", "sms", "call"):
            return self.budget_paid
        return False


StepName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Cap = Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT, description="Minor units (messages: a count).")]


class PlanChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An operator's change of an organization's plan (the body of PUT /v1/admin/organizations/{id}/
    plan): absent keeps; a null cap takes the step's again."""

    message_step: StepName | msgspec.UnsetType = msgspec.UNSET
    budget_step: StepName | msgspec.UnsetType = msgspec.UNSET
    allow_overage: bool | msgspec.UnsetType = msgspec.UNSET
    anniversary: datetime.date | msgspec.UnsetType = msgspec.UNSET
    messages_cap: Cap | msgspec.UnsetType | None = msgspec.UNSET
    cost_cap: Cap | msgspec.UnsetType | None = msgspec.UNSET
    sms_cap: Cap | msgspec.UnsetType | None = msgspec.UNSET
    call_cap: Cap | msgspec.UnsetType | None = msgspec.UNSET
    immediate: bool = False
    """Apply a downgrade now instead of at the next anniversary."""
    reason: Reason | None = None
    """Why (recorded in the audit trail)."""


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """What one event adds to the counters (units on its channel, minor units charged or held)."""

    channel: str
    units: int
    amount_cents: int


class PlanService:
    """The only writer of ``usage_plans`` and ``usage_counters``."""

    def __init__(self, db: Database, config: PlansConfig, orgs: OrgService) -> None:
        self.db = db
        self.config = config
        self.orgs = orgs

    @hookimpl
    async def billfold_domain_event(self, conn: AsyncConnection, event: DomainEvent) -> None:
        """A provider reported a checkout for plan steps paid: upgrade at once, downgrade pending."""
        if event.type != "plan.steps_paid" or event.org_id is None:
            return
        _, created_at = await self.orgs.standing(conn, event.org_id)
        for name in event.payload.get("steps", []):
            found = self.config.paid_step(str(name))
            if found is not None:
                ladder, _ = found
                change = PlanChange(**{f"{ladder}_step": str(name)})  # type: ignore[arg-type]
                await self.change(event.org_id, created_at, change, conn=conn)

    def step_for_price(self, price_id: str, ladder: str) -> str | None:
        """The step of ``ladder`` that the provider price ``price_id`` buys."""
        steps: dict[str, PlanStep] = getattr(self.config, ladder)
        return next((name for name, step in steps.items() if step.price_id == price_id), None)

    # -- plan state ---------------------------------------------------------------------------------

    def step(self, ladder: str, name: str) -> PlanStep:
        steps: dict[str, PlanStep] = getattr(self.config, ladder)
        # A step removed from billing.yaml since: the organization falls back to the default step.
        return steps.get(name) or steps[self.config.default[ladder]]

    def _plan(self, row: Any, today: datetime.date) -> Plan:
        message = self.step("message", row.message_step)
        budget = self.step("budget", row.budget_step)
        start, end = cycle_bounds(row.anniversary, today)
        return Plan(
            org_id=row.org_id,
            message_step=row.message_step,
            budget_step=row.budget_step,
            anniversary=row.anniversary,
            allow_overage=row.allow_overage,
            messages_cap=row.messages_cap if row.messages_cap is not None else message.messages_cap,
            cost_cap=row.cost_cap if row.cost_cap is not None else budget.cost_cap,
            sms_cap=row.sms_cap if row.sms_cap is not None else budget.sms_cap,
            call_cap=row.call_cap if row.call_cap is not None else budget.call_cap,
            message_paid=message.paid,
            budget_paid=budget.paid,
            pending_message_step=row.pending_message_step,
            pending_budget_step=row.pending_budget_step,
            pending_effective=row.pending_effective,
            cycle_start=start,
            cycle_end=end,
            no_cap_reminder_dismissed=row.no_cap_reminder_dismissed,
        )

    async def current(
        self,
        conn: AsyncConnection,
        org_id: uuid.UUID,
        created_at: datetime.datetime,
        at: datetime.datetime,
        *,
        row: Any = None,
    ) -> Plan:
        """The organization's plan at ``at`` (business time): created with ``plans.default`` and the
        organization's creation day as anniversary on first use; a pending downgrade whose date has
        come replaces the live steps (in the caller's transaction). ``row``: the plan's row when the
        caller read it already (in the usage write's first statement)."""
        today = at.date()
        if row is None:
            row = (await conn.execute(_PLAN, {"org_id": org_id})).first()
        if row is None:
            await conn.execute(
                dialect_insert(conn)(plans_table)
                .values(
                    org_id=org_id,
                    message_step=self.config.default["message"],
                    budget_step=self.config.default["budget"],
                    anniversary=created_at.date(),
                    allow_overage=False,
                    no_cap_reminder_dismissed=False,
                    updated_at=at,
                )
                .on_conflict_do_nothing()
            )
            row = (await conn.execute(_PLAN, {"org_id": org_id})).one()
        if row.pending_effective is not None and row.pending_effective <= today:
            await conn.execute(
                update(plans_table)
                .where(plans_table.c.org_id == org_id)
                .values(
                    message_step=row.pending_message_step or row.message_step,
                    budget_step=row.pending_budget_step or row.budget_step,
                    pending_message_step=None,
                    pending_budget_step=None,
                    pending_effective=None,
                    updated_at=at,
                )
            )
            row = (await conn.execute(_PLAN, {"org_id": org_id})).one()
        return self._plan(row, today)

    async def change(
        self,
        org_id: uuid.UUID,
        created_at: datetime.datetime,
        change: PlanChange,
        *,
        conn: AsyncConnection | None = None,
    ) -> Plan:
        """Set steps, overage, anniversary and caps. An upgrade applies at once (and clears a pending
        downgrade); a downgrade waits for the next anniversary unless ``immediate``."""
        for field in ("messages_cap", "cost_cap", "sms_cap", "call_cap"):
            value = getattr(change, field)
            if isinstance(value, int) and not 0 <= value <= MAX_AMOUNT:
                raise ValidationFailed(f"{field} must be between 0 and {MAX_AMOUNT}", field=field)
        at = now()
        async with self.db.transaction(conn) as c:
            plan = await self.current(c, org_id, created_at, at)
            values: dict[str, Any] = {"updated_at": at}
            if change.anniversary is not msgspec.UNSET:
                values["anniversary"] = change.anniversary
            if change.allow_overage is not msgspec.UNSET:
                values["allow_overage"] = change.allow_overage
            for field in ("messages_cap", "cost_cap", "sms_cap", "call_cap"):
                value = getattr(change, field)
                if value is not msgspec.UNSET:
                    values[field] = value
            for ladder in ("message", "budget"):
                step = getattr(change, f"{ladder}_step")
                if step is msgspec.UNSET:
                    continue
                values.update(self._step_change(plan, ladder, step, immediate=change.immediate))
            await c.execute(update(plans_table).where(plans_table.c.org_id == org_id).values(**values))
            return await self.current(c, org_id, created_at, at)

    def _step_change(self, plan: Plan, ladder: str, step: str, *, immediate: bool) -> dict[str, Any]:
        steps: dict[str, PlanStep] = getattr(self.config, ladder)
        if step not in steps:
            raise ValidationFailed(
                f"{ladder}_step must be one of: {', '.join(steps)}",
                field=f"{ladder}_step",
                code="unknown_step",
            )
        live = getattr(plan, f"{ladder}_step")
        pending = f"pending_{ladder}_step"
        if immediate or self.config.rank(ladder, step) >= self.config.rank(ladder, live):
            # An upgrade (or the same step) applies at once and cancels that ladder's pending downgrade.
            other = "budget" if ladder == "message" else "message"
            clears_date = getattr(plan, f"pending_{other}_step") is None
            return {
                f"{ladder}_step": step,
                pending: None,
                **({"pending_effective": None} if clears_date else {}),
            }
        return {pending: step, "pending_effective": plan.cycle_end}

    async def get(
        self, org_id: uuid.UUID, created_at: datetime.datetime, *, conn: AsyncConnection | None = None
    ) -> Plan:
        async with self.db.transaction(conn) as c:
            return await self.current(c, org_id, created_at, now())

    async def dismiss_reminder(self, org_id: uuid.UUID, created_at: datetime.datetime) -> Plan:
        async with self.db.transaction() as c:
            await self.current(c, org_id, created_at, now())
            await c.execute(
                update(plans_table)
                .where(plans_table.c.org_id == org_id)
                .values(no_cap_reminder_dismissed=True)
            )
            return await self.current(c, org_id, created_at, now())

    # -- caps and counters ---------------------------------------------------------------------------

    def counted(
        self, plan: Plan, usage: Usage, *, unverified: bool, spend_cap: int | None
    ) -> dict[str, tuple[int, int | None]]:
        """The counters an event moves: name → (delta, cap or None)."""
        moves: dict[str, tuple[int, int | None]] = {"spend": (usage.amount_cents, spend_cap)}
        if usage.channel in self.config.message_channels:
            moves["messages"] = (usage.units, plan.messages_cap)
        if usage.channel in self.config.budget_channels:
            # The channel's own sub-cap first: a refusal names the narrowest cap it hit.
            if usage.channel in ("sms", "call"):
                moves[usage.channel] = (usage.amount_cents, plan.cap(usage.channel))
            moves["cost"] = (usage.amount_cents, plan.cost_cap)
        internal = self.config.unverified_caps.get(usage.channel)
        if unverified and internal is not None:
            moves[f"unverified:{usage.channel}"] = (usage.units, internal)
        return moves

    async def counters_now(self, conn: AsyncConnection, plan: Plan) -> dict[str, tuple[int, int]]:
        """The cycle's counters: name → (value, warning level reached)."""
        rows = (await conn.execute(_COUNTERS, {"org_id": plan.org_id, "cycle_start": plan.cycle_start})).all()
        return {r.counter: (r.value, r.warned) for r in rows}

    @staticmethod
    def refusal(
        plan: Plan, moves: dict[str, tuple[int, int | None]], current: dict[str, tuple[int, int]]
    ) -> PaymentRequired | None:
        """The 402 (the cap's code) for an event whose ``moves`` would take a counter past its cap
        and no overage applies; None when it fits."""
        for name, (delta, cap) in moves.items():
            if cap is None:
                continue
            value = current.get(name, (0, 0))[0]
            kind = "unverified" if name.startswith("unverified:") else name
            over = (cap == 0 and name == "spend") or value + delta > cap
            if over and not plan.overage_allowed(kind):
                return PaymentRequired(
                    f"this event would take the {kind} cap past {cap} ({value} used this cycle)",
                    code=CAP_CODES[kind],
                    fix="Raise the cap or change the plan, or wait for the next cycle.",
                    extra={"cap": cap, "used": value, "cycle_start": plan.cycle_start.isoformat()},
                )
        return None

    async def advance(
        self,
        conn: AsyncConnection,
        plan: Plan,
        moves: dict[str, tuple[int, int | None]],
        current: dict[str, tuple[int, int]],
    ) -> list[tuple[str, int, int]]:
        """Add ``moves`` to ``current`` (in place) and announce the warning levels they reach, once
        per cycle each. Returns the counters' changes to write: (name, delta, level reached)."""
        bumps: list[tuple[str, int, int]] = []
        for name, (delta, cap) in moves.items():
            if delta == 0 and name in current:
                continue
            value, warned = current.get(name, (0, 0))
            after = value + delta
            reached = warned
            if cap:
                percentage = after * 100 // cap
                for level in WARNING_LEVELS:
                    if warned < level <= percentage:
                        reached = level
                        await emit(
                            conn,
                            "usage.cap_exceeded" if level == 100 else "usage.cap_warning",
                            {
                                "cap": name,
                                "percentage": level,
                                "used": after,
                                "limit": cap,
                                "cycle_start": plan.cycle_start.isoformat(),
                            },
                            org_id=plan.org_id,
                        )
            current[name] = (after, reached)
            bumps.append((name, delta, reached))
        return bumps

    async def check_and_count(
        self, conn: AsyncConnection, plan: Plan, usage: Usage, *, unverified: bool, spend_cap: int | None
    ) -> dict[str, int]:
        """Refuse (402, the cap's code) an event that would take a counter past its cap, unless
        overage applies; otherwise add it to the cycle's counters and announce the warning levels it
        reached. Returns what was added (to reverse it if the event later fails)."""
        moves = self.counted(plan, usage, unverified=unverified, spend_cap=spend_cap)
        current = await self.counters_now(conn, plan)
        refused = self.refusal(plan, moves, current)
        if refused is not None:
            raise refused
        bumps = await self.advance(conn, plan, moves, current)
        if bumps:
            await self.bump(conn, plan, bumps)
        return {name: delta for name, delta, _ in bumps}

    async def bump(self, conn: AsyncConnection, plan: Plan, bumps: list[tuple[str, int, int]]) -> None:
        """Add to several counters in one statement (name, delta, warning level reached; one row
        per name)."""
        params: dict[str, Any] = {"org_id": plan.org_id, "cycle_start": plan.cycle_start}
        for i, (name, delta, warned) in enumerate(bumps):
            params[f"counter{i}"], params[f"delta{i}"], params[f"warned{i}"] = name, delta, warned
        await conn.execute(_bump_statement(len(bumps)), params)

    async def uncount(
        self, conn: AsyncConnection, org_id: uuid.UUID, cycle_start: datetime.date, added: dict[str, int]
    ) -> None:
        """Take back what a failed or expired reservation added (announcements stay made)."""
        for name, delta in added.items():
            if delta:
                await conn.execute(
                    update(counters)
                    .where(
                        counters.c.org_id == org_id,
                        counters.c.cycle_start == cycle_start,
                        counters.c.counter == name,
                    )
                    .values(value=counters.c.value - delta)
                )

    async def cycle_counters(self, org_id: uuid.UUID, cycle_start: datetime.date) -> dict[str, int]:
        async with self.db.reading() as c:
            rows = (
                await c.execute(
                    select(counters.c.counter, counters.c.value).where(
                        counters.c.org_id == org_id, counters.c.cycle_start == cycle_start
                    )
                )
            ).all()
        return {r.counter: r.value for r in rows}
