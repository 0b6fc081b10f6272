"""Organizations (tenants): creation, reads and status. Each has one ledger account."""

from __future__ import annotations

import contextlib
import datetime
import uuid
from collections.abc import Mapping

import msgspec
from advanced_alchemy.filters import LimitOffset, OrderBy, StatementFilter
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import ColumnElement, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.clock import now
from billfold.config import CurrencyConfig
from billfold.db import Database, new_id, table_of
from billfold.errors import NotFound, ValidationFailed
from billfold.events.outbox import DomainEvent
from billfold.hookspecs import hookimpl
from billfold.ledger.service import LedgerService
from billfold.orgs.keys import IssuedKey, KeyService
from billfold.orgs.models import Organization
from billfold.plugins import Hooks

organizations = table_of(Organization)
_STANDING = select(organizations.c.status, organizations.c.created_at).where(
    organizations.c.id == bindparam("org_id")
)
"""Built once: a usage event reads it on every request."""

MAX_NAME_LENGTH = 200
ORG_STATUSES = ("verified", "unverified", "blocked")


class OrgRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    currency: str
    creator: str
    organization_type: str
    status: str
    created_at: datetime.datetime
    updated_at: datetime.datetime
    suspended_at: datetime.datetime | None = None

    @property
    def is_suspended(self) -> bool:
        return self.status == "blocked"


def _as_utc(value: datetime.datetime) -> datetime.datetime:
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def _row(org: Organization) -> OrgRow:
    return OrgRow(
        id=org.id,
        name=org.name,
        currency=org.currency,
        creator=org.creator,
        organization_type=org.organization_type,
        status=org.status,
        created_at=_as_utc(org.created_at),
        updated_at=_as_utc(org.updated_at),
        suspended_at=_as_utc(org.suspended_at) if org.suspended_at else None,
    )


class OrganizationRepository(SQLAlchemyAsyncRepository[Organization]):
    model_type = Organization


def check_text(value: str, field: str, maximum: int, *, required: bool = False) -> str:
    if "\x00" in value:
        raise ValidationFailed(f"{field} must not contain NUL characters", field=field)
    if len(value) > maximum:
        raise ValidationFailed(f"{field} must be at most {maximum} characters", field=field)
    if required and not value.strip():
        raise ValidationFailed(f"{field} must not be empty", field=field)
    return value


class OrgService:
    BILLFOLD_CORE = True

    def __init__(
        self,
        db: Database,
        ledger: LedgerService,
        keys: KeyService,
        hooks: Hooks,
        *,
        currencies: Mapping[str, CurrencyConfig],
        default_currency: str,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.keys = keys
        self.hooks = hooks
        self.currencies = currencies
        self.default_currency = default_currency

    async def create(
        self,
        *,
        name: str,
        currency: str | None = None,
        creator: str = "operator",
        conn: AsyncConnection | None = None,
    ) -> OrgRow:
        """Create an organization with its account; plugins add their rows in the same transaction
        (``billfold_organization_created``) and the account learns the levels they watch."""
        name = check_text(name, "name", MAX_NAME_LENGTH, required=True).strip()
        creator = check_text(creator, "creator", MAX_NAME_LENGTH)
        code = (currency or self.default_currency).lower()
        if code not in self.currencies:
            known = ", ".join(sorted(self.currencies))
            raise ValidationFailed(
                f"currency must be one of: {known}", code="invalid_currency", field="currency"
            )
        created = now()
        async with self.db.transaction(conn) as c:
            async with self.db.session(c) as session:
                org = await OrganizationRepository(session=session, auto_refresh=False).add(
                    Organization(
                        id=new_id(),
                        name=name,
                        currency=code,
                        creator=creator,
                        organization_type="free",
                        status="verified",
                        created_at=created,
                        updated_at=created,
                    )
                )
                row = _row(org)
            await self.ledger.open_account(c, row.id, code)
            await self.hooks.call("billfold_organization_created", conn=c, org=row)
            # after the plugins made their per-organization rows (auto-reload settings...)
            await self.ledger.refresh_levels(row.id, conn=c)
        return row

    async def create_with_key(
        self, *, name: str, currency: str | None = None, creator: str = "operator", key_name: str = "default"
    ) -> tuple[OrgRow, IssuedKey]:
        """Create an organization and its first API key in one transaction."""
        async with self.db.transaction() as conn:
            org = await self.create(name=name, currency=currency, creator=creator, conn=conn)
            return org, await self.keys.issue(org.id, name=key_name, conn=conn)

    async def get(self, org_id: uuid.UUID, *, conn: AsyncConnection | None = None) -> OrgRow:
        async with self.db.reading(conn) as c, self.db.session(c) as session:
            org = await OrganizationRepository(session=session).get_one_or_none(id=org_id)
            if org is None:
                raise NotFound("organization not found", code="organization_not_found")
            return _row(org)

    async def standing(self, conn: AsyncConnection, org_id: uuid.UUID) -> tuple[str, datetime.datetime]:
        """(status, created_at) in one indexed read: what a usage write needs of its organization."""
        row = (await conn.execute(_STANDING, {"org_id": org_id})).first()
        if row is None:
            raise NotFound("organization not found", code="organization_not_found")
        return row.status, _as_utc(row.created_at)

    async def ids_created_before(
        self, conn: AsyncConnection, end: datetime.datetime, *, only: uuid.UUID | None = None
    ) -> list[uuid.UUID]:
        """Organizations that existed before ``end`` (the month close's candidates), oldest first."""
        stmt = select(organizations.c.id).where(organizations.c.created_at < end)
        if only is not None:
            stmt = stmt.where(organizations.c.id == only)
        return list((await conn.execute(stmt.order_by(organizations.c.created_at))).scalars().all())

    async def list(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        search: str | None = None,
        order_by: str = "created_at",
        descending: bool = True,
        conn: AsyncConnection | None = None,
    ) -> tuple[list[OrgRow], int]:
        """A page of organizations (name contains ``search``, or id equals it), and the total."""
        filters: list[StatementFilter | ColumnElement[bool]] = [
            LimitOffset(limit=limit, offset=offset),
            OrderBy(order_by, "desc" if descending else "asc"),
        ]
        if search:
            clauses: list[ColumnElement[bool]] = [Organization.name.ilike(f"%{search}%")]
            with contextlib.suppress(ValueError):
                clauses.append(Organization.id == uuid.UUID(search))
            filters.append(or_(*clauses))
        async with self.db.reading(conn) as c, self.db.session(c) as session:
            rows, total = await OrganizationRepository(session=session).get_many_and_count(*filters)
            return [_row(r) for r in rows], total

    async def set_status(
        self, org_id: uuid.UUID, status: str, *, conn: AsyncConnection | None = None
    ) -> OrgRow:
        """verified | unverified | blocked; blocking records when (``suspended_at``)."""
        if status not in ORG_STATUSES:
            raise ValidationFailed(f"status must be one of: {', '.join(ORG_STATUSES)}", field="status")
        async with self.db.transaction(conn) as c:
            current = await self.get(org_id, conn=c)
            if current.status != status:
                stamp = now()
                await c.execute(
                    update(organizations)
                    .where(organizations.c.id == org_id)
                    .values(
                        status=status, suspended_at=stamp if status == "blocked" else None, updated_at=stamp
                    )
                )
            return await self.get(org_id, conn=c)

    @hookimpl
    async def billfold_domain_event(self, conn: AsyncConnection, event: DomainEvent) -> None:
        """The first successful payment makes an organization `paid` (document 003's type)."""
        if event.type == "payment.succeeded" and event.org_id is not None:
            await conn.execute(
                update(organizations)
                .where(organizations.c.id == event.org_id, organizations.c.organization_type != "paid")
                .values(organization_type="paid", updated_at=now())
            )
