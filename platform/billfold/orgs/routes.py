"""Operator routes (BILLFOLD_ADMIN_API_KEY): organizations, keys, adjustments, refunds, overage."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.api.auth import Tenant, admin_guard, provide_state
from billfold.api.writes import money_write
from billfold.ledger.routes import TENANT_DEPENDENCIES, posted_transaction
from billfold.ledger.schemas import to_balance
from billfold.ledger.service import Posted
from billfold.orgs.schemas import (
    AdjustmentIn,
    KeyCreate,
    KeyCreated,
    KeyRevoked,
    LedgerWriteOut,
    OrganizationCreate,
    OrganizationCreated,
    OrganizationOut,
    OverageIn,
    RefundIn,
)
from billfold.orgs.service import OrgRow
from billfold.state import AppState


def _org_out(org: OrgRow) -> OrganizationOut:
    assert isinstance(org.created_at, datetime.datetime)
    return OrganizationOut(
        id=org.id,
        name=org.name,
        currency=org.currency,
        organization_type=org.organization_type,
        created_at=org.created_at,
    )


def _write_out(app_state: AppState, posted: Posted) -> LedgerWriteOut:
    return LedgerWriteOut(
        transaction=posted_transaction(app_state, posted), balance=to_balance(posted.account)
    )


class AdminController(Controller):
    path = "/v1/admin"
    tags = ["operator"]
    guards = [admin_guard]
    dependencies = {"app_state": Provide(provide_state, sync_to_thread=False)}

    @post("/organizations", operation_id="AdminCreateOrganization")
    async def create_organization(
        self, data: JSONBody[OrganizationCreate], app_state: NamedDependency[AppState]
    ) -> OrganizationCreated:
        async with app_state.engine.begin() as conn:
            org = await app_state.orgs.create(
                conn,
                name=data.name,
                currency=data.currency or app_state.config.default_currency,
                creator=data.creator,
            )
            key = await app_state.orgs.issue_key(conn, org.id, name="default")
        out = _org_out(org)
        return OrganizationCreated(
            id=out.id,
            name=out.name,
            currency=out.currency,
            organization_type=out.organization_type,
            created_at=out.created_at,
            api_key=key.api_key,
            key_id=key.id,
        )

    @get("/organizations/{org_id:uuid}", operation_id="AdminGetOrganization")
    async def get_organization(
        self, org_id: FromPath[uuid.UUID], app_state: NamedDependency[AppState]
    ) -> OrganizationOut:
        async with app_state.engine.connect() as conn:
            return _org_out(await app_state.orgs.get(conn, org_id))

    @post("/organizations/{org_id:uuid}/keys", operation_id="AdminCreateKey")
    async def create_key(
        self,
        org_id: FromPath[uuid.UUID],
        app_state: NamedDependency[AppState],
        data: JSONBody[KeyCreate | None] = None,
    ) -> KeyCreated:
        async with app_state.engine.begin() as conn:
            key = await app_state.orgs.issue_key(conn, org_id, name=(data or KeyCreate()).name)
        return KeyCreated(id=key.id, organization_id=key.org_id, prefix=key.prefix, api_key=key.api_key)

    @post("/keys/{key_id:uuid}/revoke", operation_id="AdminRevokeKey", status_code=200)
    async def revoke_key(
        self, key_id: FromPath[uuid.UUID], app_state: NamedDependency[AppState]
    ) -> KeyRevoked:
        async with app_state.engine.begin() as conn:
            await app_state.orgs.revoke_key(conn, key_id)
        return KeyRevoked(id=key_id)

    @post("/organizations/{org_id:uuid}/adjustments", operation_id="AdminAdjust")
    async def adjust(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[uuid.UUID],
        data: JSONBody[AdjustmentIn],
        app_state: NamedDependency[AppState],
    ) -> Response[bytes]:
        async def work(conn: AsyncConnection) -> LedgerWriteOut:
            posted = await app_state.ledger.adjust(
                conn, org_id, data.amount_cents, description=data.description, metadata=data.metadata
            )
            return _write_out(app_state, posted)

        return await money_write(app_state, request, org_id, work)

    @post("/organizations/{org_id:uuid}/refunds", operation_id="AdminRefund")
    async def refund(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[uuid.UUID],
        data: JSONBody[RefundIn],
        app_state: NamedDependency[AppState],
    ) -> Response[bytes]:
        async def work(conn: AsyncConnection) -> LedgerWriteOut:
            posted = await app_state.ledger.refund(
                conn, org_id, data.amount_cents, description=data.description, reference=data.reference
            )
            return _write_out(app_state, posted)

        return await money_write(app_state, request, org_id, work)

    @put("/organizations/{org_id:uuid}/overage", operation_id="AdminSetOverage")
    async def set_overage(
        self, org_id: FromPath[uuid.UUID], data: JSONBody[OverageIn], app_state: NamedDependency[AppState]
    ) -> dict[str, int]:
        async with app_state.engine.begin() as conn:
            await app_state.ledger.account(conn, org_id)
            await app_state.ledger.set_overage_limit(conn, org_id, data.overage_limit_cents)
        return {"overage_limit_cents": data.overage_limit_cents}


class KeysController(Controller):
    """A tenant revokes one of its own keys."""

    path = "/v1/api-keys"
    tags = ["keys"]
    dependencies = TENANT_DEPENDENCIES

    @post("/{key_id:uuid}/revoke", operation_id="RevokeOwnKey", status_code=200)
    async def revoke(
        self,
        key_id: FromPath[uuid.UUID],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> KeyRevoked:
        async with app_state.engine.begin() as conn:
            await app_state.orgs.revoke_key(conn, key_id, org_id=tenant.org_id)
        return KeyRevoked(id=key_id)
