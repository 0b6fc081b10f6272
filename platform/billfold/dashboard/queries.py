"""What the dashboard's pages read: one query per list, straight from the tables (read only)."""

from __future__ import annotations

import contextlib
import datetime
import uuid
from typing import Any

import msgspec
from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.db import Database, table_of
from billfold.ledger.models import Account, Entry, Hold
from billfold.orgs.models import ApiKey, Organization
from billfold.payments.models import BillingProfile, Payment, PaymentMethod
from billfold.usage.models import UsagePlan

organizations = table_of(Organization)
accounts = table_of(Account)
entries = table_of(Entry)
holds = table_of(Hold)
api_keys = table_of(ApiKey)
profiles = table_of(BillingProfile)
methods = table_of(PaymentMethod)
payments = table_of(Payment)
plans = table_of(UsagePlan)

PAGE_SIZE = 25
SORTS = {
    "name": organizations.c.name,
    "created": organizations.c.created_at,
    "balance": accounts.c.free_cents,
    "status": organizations.c.status,
}
"""The organizations list's sortable columns (``?sort=``)."""


class OrgListRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    currency: str
    status: str
    created_at: datetime.datetime
    free_cents: int
    reserved_cents: int
    message_step: str | None
    budget_step: str | None
    auto_reload: str
    """``off``, ``on``, ``paused`` or ``failing`` (failures since the last success)."""


def auto_reload_state(row: Any) -> str:
    if row is None or not row.auto_reload_enabled:
        return "off"
    if row.reload_paused:
        return "paused"
    if row.reload_failures:
        return "failing"
    return "on"


def _list_query() -> Select[Any]:
    return (
        select(
            organizations.c.id,
            organizations.c.name,
            organizations.c.currency,
            organizations.c.status,
            organizations.c.created_at,
            func.coalesce(accounts.c.free_cents, 0).label("free_cents"),
            func.coalesce(accounts.c.reserved_cents, 0).label("reserved_cents"),
            plans.c.message_step,
            plans.c.budget_step,
            profiles.c.auto_reload_enabled,
            profiles.c.reload_paused,
            profiles.c.reload_failures,
        )
        .select_from(organizations)
        .outerjoin(accounts, accounts.c.org_id == organizations.c.id)
        .outerjoin(plans, plans.c.org_id == organizations.c.id)
        .outerjoin(profiles, profiles.c.org_id == organizations.c.id)
    )


async def list_organizations(
    conn: AsyncConnection, *, search: str, sort: str, descending: bool, page: int
) -> tuple[list[OrgListRow], int]:
    """A page of organizations (name contains ``search``, case-insensitive, or id equals it) and
    the number that match."""
    stmt = _list_query()
    counting = select(func.count()).select_from(organizations)
    if search:
        clauses: list[Any] = [func.lower(organizations.c.name).contains(search.lower(), autoescape=True)]
        with contextlib.suppress(ValueError):
            clauses.append(organizations.c.id == uuid.UUID(search))
        stmt = stmt.where(or_(*clauses))
        counting = counting.where(or_(*clauses))
    column = SORTS.get(sort, SORTS["created"])
    ordered = column.desc() if descending else column.asc()
    stmt = stmt.order_by(ordered, organizations.c.id.desc() if descending else organizations.c.id.asc())
    stmt = stmt.limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
    total = int((await conn.execute(counting)).scalar_one())
    rows = (await conn.execute(stmt)).all()
    return [
        OrgListRow(
            id=r.id,
            name=r.name,
            currency=r.currency,
            status=r.status,
            created_at=r.created_at,
            free_cents=int(r.free_cents),
            reserved_cents=int(r.reserved_cents),
            message_step=r.message_step,
            budget_step=r.budget_step,
            auto_reload=auto_reload_state(r),
        )
        for r in rows
    ], total


async def recent_entries(conn: AsyncConnection, org_id: uuid.UUID, limit: int = 20) -> list[Any]:
    stmt = select(entries).where(entries.c.org_id == org_id).order_by(entries.c.id.desc()).limit(limit)
    return list((await conn.execute(stmt)).all())


async def recent_holds(conn: AsyncConnection, org_id: uuid.UUID, limit: int = 20) -> list[Any]:
    """Pending holds first, then the latest finished ones."""
    pending = holds.c.status == "pending"
    stmt = (
        select(holds)
        .where(holds.c.org_id == org_id)
        .order_by(pending.desc(), holds.c.created_at.desc())
        .limit(limit)
    )
    return list((await conn.execute(stmt)).all())


async def payment_methods(conn: AsyncConnection, org_id: uuid.UUID) -> list[Any]:
    stmt = select(methods).where(methods.c.org_id == org_id).order_by(methods.c.created_at.desc())
    return list((await conn.execute(stmt)).all())


async def profile(conn: AsyncConnection, org_id: uuid.UUID) -> Any:
    return (await conn.execute(select(profiles).where(profiles.c.org_id == org_id))).first()


async def reload_failures(conn: AsyncConnection, org_id: uuid.UUID, limit: int = 10) -> list[Any]:
    """The organization's failed automatic payments, newest first."""
    stmt = (
        select(payments)
        .where(
            payments.c.org_id == org_id,
            payments.c.purpose == "auto_reload",
            payments.c.failure_code.is_not(None),
        )
        .order_by(payments.c.created_at.desc())
        .limit(limit)
    )
    return list((await conn.execute(stmt)).all())


async def keys_of(conn: AsyncConnection, org_id: uuid.UUID) -> list[Any]:
    stmt = (
        select(
            api_keys.c.id, api_keys.c.prefix, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked_at
        )
        .where(api_keys.c.org_id == org_id)
        .order_by(api_keys.c.revoked_at.is_not(None), api_keys.c.created_at.desc())
    )
    return list((await conn.execute(stmt)).all())


async def key_owner(conn: AsyncConnection, key_id: uuid.UUID) -> uuid.UUID | None:
    return (await conn.execute(select(api_keys.c.org_id).where(api_keys.c.id == key_id))).scalar_one_or_none()


async def account(conn: AsyncConnection, org_id: uuid.UUID) -> Any:
    return (await conn.execute(select(accounts).where(accounts.c.org_id == org_id))).first()


class DashboardReads:
    """The dashboard pages' reads, each on one pooled connection."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def organizations(
        self, *, search: str, sort: str, descending: bool, page: int
    ) -> tuple[list[OrgListRow], int]:
        async with self.db.reading() as conn:
            return await list_organizations(conn, search=search, sort=sort, descending=descending, page=page)

    async def free_cents(self, org_id: uuid.UUID) -> int:
        async with self.db.reading() as conn:
            found = await account(conn, org_id)
        return int(found.free_cents) if found is not None else 0

    async def organization(
        self, org_id: uuid.UUID, first: datetime.date, last: datetime.date
    ) -> dict[str, Any]:
        """Everything the organization page shows from the tables, charts' series included."""
        from billfold.dashboard import charts

        async with self.db.reading() as conn:
            return {
                "account": await account(conn, org_id),
                "free": await charts.free_balance_series(conn, org_id, first, last),
                "usage": await charts.usage_series(conn, org_id, first, last),
                "entries": await recent_entries(conn, org_id),
                "holds": await recent_holds(conn, org_id),
                "methods": await payment_methods(conn, org_id),
                "profile": await profile(conn, org_id),
                "failures": await reload_failures(conn, org_id),
                "keys": await keys_of(conn, org_id),
            }
