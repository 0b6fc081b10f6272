"""The core's operator actions, each with its audit row in the same transaction.

The operator routes, the command line (and any other operator interface) call these, never the
underlying services directly: an action that commits has exactly one audit row, one that fails
(refused, rolled back) has none.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.audit.service import AuditActor, record_audit
from billfold.clock import BusinessClock
from billfold.db import Database
from billfold.ledger.rows import AccountRow, Posted
from billfold.ledger.service import LedgerService
from billfold.orgs.keys import IssuedKey, KeyService
from billfold.orgs.service import OrgRow, OrgService
from billfold.usage.plans import Plan, PlanChange, PlanService

_PLAN_FIELDS = (
    "message_step",
    "budget_step",
    "allow_overage",
    "anniversary",
    "messages_cap",
    "cost_cap",
    "sms_cap",
    "call_cap",
    "pending_message_step",
    "pending_budget_step",
    "pending_effective",
)


def balance_snapshot(account: AccountRow) -> dict[str, Any]:
    return {
        "free_cents": account.free_cents,
        "reserved_cents": account.reserved_cents,
        "total_cents": account.total_cents,
        "overage_limit_cents": account.overage_limit_cents,
    }


def plan_snapshot(plan: Plan) -> dict[str, Any]:
    return {name: msgspec.to_builtins(getattr(plan, name)) for name in _PLAN_FIELDS}


def _status_snapshot(org: OrgRow) -> dict[str, Any]:
    return {"status": org.status, "suspended_at": msgspec.to_builtins(org.suspended_at)}


class OperatorActions:
    """Adjustments, refunds, keys, status, overage, plans and the business clock, audited."""

    def __init__(
        self,
        db: Database,
        *,
        ledger: LedgerService,
        orgs: OrgService,
        keys: KeyService,
        plans: PlanService,
        clock: BusinessClock,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.orgs = orgs
        self.keys = keys
        self.plans = plans
        self.clock = clock

    async def create_organization(
        self,
        actor: AuditActor,
        *,
        name: str,
        currency: str | None = None,
        creator: str = "operator",
        reason: str | None = None,
    ) -> tuple[OrgRow, IssuedKey]:
        """An organization and its first API key (``organization.created``)."""
        async with self.db.transaction() as conn:
            org = await self.orgs.create(name=name, currency=currency, creator=creator, conn=conn)
            key = await self.keys.issue(org.id, name="default", conn=conn)
            await record_audit(
                conn,
                actor,
                "organization.created",
                org_id=org.id,
                target=str(key.id),
                after={
                    "name": org.name,
                    "currency": org.currency,
                    "creator": org.creator,
                    "status": org.status,
                    "key_id": key.id,
                    "key_prefix": key.prefix,
                },
                reason=reason,
            )
        return org, key

    async def issue_key(
        self, actor: AuditActor, org_id: uuid.UUID, *, name: str = "", reason: str | None = None
    ) -> IssuedKey:
        """Another API key for an organization (``api_key.created``)."""
        async with self.db.transaction() as conn:
            key = await self.keys.issue(org_id, name=name, conn=conn)
            await record_audit(
                conn,
                actor,
                "api_key.created",
                org_id=org_id,
                target=str(key.id),
                after={"key_id": key.id, "prefix": key.prefix, "name": name},
                reason=reason,
            )
        return key

    async def revoke_key(
        self, actor: AuditActor, key_id: uuid.UUID, *, reason: str | None = None
    ) -> uuid.UUID:
        """Revoke any organization's API key (``api_key.revoked``); returns its organization."""
        async with self.db.transaction() as conn:
            org_id = await self.keys.revoke(key_id, conn=conn)
            await record_audit(
                conn,
                actor,
                "api_key.revoked",
                org_id=org_id,
                target=str(key_id),
                before={"key_id": key_id, "revoked": False},
                after={"key_id": key_id, "revoked": True},
                reason=reason,
            )
        return org_id

    async def adjust(
        self,
        actor: AuditActor,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        description: str,
        metadata: dict[str, Any] | None = None,
        reason: str | None = None,
        conn: AsyncConnection | None = None,
    ) -> Posted:
        """Credit or debit an organization (``ledger.adjusted``); a debit that the balance (and
        overage) cannot cover is refused (402) and leaves nothing."""
        async with self.db.transaction(conn) as c:
            before = await self.ledger.lock(c, org_id)
            posted = await self.ledger.adjust(
                org_id, amount_cents, conn=c, description=description, metadata=metadata
            )
            await self._money_audit(c, actor, "ledger.adjusted", before, posted, reason)
        return posted

    async def refund(
        self,
        actor: AuditActor,
        org_id: uuid.UUID,
        amount_cents: int,
        *,
        description: str,
        reference: str | None = None,
        reason: str | None = None,
        conn: AsyncConnection | None = None,
    ) -> Posted:
        """Money returned outside Billfold (``ledger.refunded``)."""
        async with self.db.transaction(conn) as c:
            before = await self.ledger.lock(c, org_id)
            posted = await self.ledger.refund(
                org_id, amount_cents, conn=c, description=description, reference=reference
            )
            await self._money_audit(c, actor, "ledger.refunded", before, posted, reason)
        return posted

    @staticmethod
    async def _money_audit(
        conn: AsyncConnection,
        actor: AuditActor,
        action: str,
        before: AccountRow,
        posted: Posted,
        reason: str | None,
    ) -> None:
        entry = posted.entry
        await record_audit(
            conn,
            actor,
            action,
            org_id=entry.org_id,
            target=f"entry:{entry.id}",
            before=balance_snapshot(before),
            after={
                **balance_snapshot(posted.account),
                "entry_id": entry.id,
                "amount_cents": entry.amount_cents,
                "description": entry.description,
                "reference": entry.reference,
            },
            reason=reason,
        )

    async def set_status(
        self, actor: AuditActor, org_id: uuid.UUID, status: str, *, reason: str | None = None
    ) -> OrgRow:
        """verified, unverified or blocked (``organization.status_set``)."""
        async with self.db.transaction() as conn:
            before = await self.orgs.get(org_id, conn=conn)
            after = await self.orgs.set_status(org_id, status, conn=conn)
            await record_audit(
                conn,
                actor,
                "organization.status_set",
                org_id=org_id,
                before=_status_snapshot(before),
                after=_status_snapshot(after),
                reason=reason,
            )
        return after

    async def set_overage(
        self, actor: AuditActor, org_id: uuid.UUID, limit_cents: int, *, reason: str | None = None
    ) -> AccountRow:
        """How far below zero the free balance may go (``organization.overage_set``)."""
        async with self.db.transaction() as conn:
            before = await self.ledger.lock(conn, org_id)
            after = await self.ledger.set_overage_limit(org_id, limit_cents, conn=conn)
            await record_audit(
                conn,
                actor,
                "organization.overage_set",
                org_id=org_id,
                before={"overage_limit_cents": before.overage_limit_cents},
                after={"overage_limit_cents": after.overage_limit_cents},
                reason=reason,
            )
        return after

    async def change_plan(
        self, actor: AuditActor, org_id: uuid.UUID, change: PlanChange, *, reason: str | None = None
    ) -> Plan:
        """Steps, caps, overage, anniversary (``plan.changed``)."""
        async with self.db.transaction() as conn:
            org = await self.orgs.get(org_id, conn=conn)
            before = await self.plans.get(org_id, org.created_at, conn=conn)
            after = await self.plans.change(org_id, org.created_at, change, conn=conn)
            await record_audit(
                conn,
                actor,
                "plan.changed",
                org_id=org_id,
                before=plan_snapshot(before),
                after=plan_snapshot(after),
                reason=reason,
            )
        return after

    async def advance_clock(
        self, actor: AuditActor, by: datetime.timedelta, *, reason: str | None = None
    ) -> datetime.datetime:
        """Move the business clock forward (``clock.advanced``; development only)."""

        async def write(conn: AsyncConnection, before: datetime.datetime, after: datetime.datetime) -> None:
            await record_audit(
                conn,
                actor,
                "clock.advanced",
                before={"now": before},
                after={"now": after, "advanced_seconds": by.total_seconds()},
                reason=reason,
            )

        return await self.clock.advance(by, on_stored=write)
