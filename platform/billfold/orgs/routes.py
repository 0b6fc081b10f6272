"""Operator routes (organizations, keys, adjustments, refunds, overage) and a tenant's own keys."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from billfold.api import examples
from billfold.api.auth import OrgScope, TenantController, operator_guard
from billfold.api.openapi import IDEMPOTENCY_KEY, OptionalBody, responses
from billfold.api.writes import idempotent, reply
from billfold.audit.actions import OperatorActions
from billfold.audit.service import AuditActor
from billfold.config import CurrencyConfig
from billfold.ledger.idempotency import IdempotencyService
from billfold.ledger.routes import posted_transaction
from billfold.ledger.rows import Posted
from billfold.ledger.schemas import to_balance
from billfold.orgs.keys import KeyService
from billfold.orgs.schemas import (
    AdjustmentIn,
    KeyCreate,
    KeyCreated,
    KeyRevoke,
    KeyRevoked,
    LedgerWriteOut,
    OrganizationCreate,
    OrganizationCreated,
    OrganizationOut,
    OrganizationStatus,
    OverageIn,
    OverageOut,
    RefundIn,
    StatusIn,
)
from billfold.orgs.service import OrgRow, OrgService

Currencies = Mapping[str, CurrencyConfig]


def _org_out(org: OrgRow) -> OrganizationOut:
    return OrganizationOut(
        id=org.id,
        name=org.name,
        currency=org.currency,
        organization_type=org.organization_type,
        created_at=org.created_at,
    )


_UNNAMED_KEY = KeyCreate()
"""A key issued without a body."""
_NO_REASON = KeyRevoke()
"""A key revoked without a body."""


class AdminController(Controller):
    path = "/v1/admin"
    tags = ["operator"]
    guards = [operator_guard]

    @post(
        "/organizations",
        operation_id="AdminCreateOrganization",
        description=(
            "Creates an organization in a configured currency with a zero balance and issues its "
            "first API key. The key is in this answer only: store it. Operator key."
        ),
        summary="Create an organization and its first API key (shown once)",
        responses=responses(body=True),
    )
    async def create_organization(
        self,
        data: JSONBody[OrganizationCreate],
        actions: NamedDependency[OperatorActions],
        audit_actor: NamedDependency[AuditActor],
    ) -> OrganizationCreated:
        org, key = await actions.create_organization(
            audit_actor, name=data.name, currency=data.currency, creator=data.creator, reason=data.reason
        )
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

    @get(
        "/organizations/{org_id:uuid}",
        operation_id="AdminGetOrganization",
        description="The organization's name, currency, status and balances. Operator key.",
        summary="An organization",
        responses=responses(404),
    )
    async def get_organization(
        self, org_id: FromPath[uuid.UUID], orgs: NamedDependency[OrgService]
    ) -> OrganizationOut:
        return _org_out(await orgs.get(org_id))

    @post(
        "/organizations/{org_id:uuid}/keys",
        operation_id="AdminCreateKey",
        description=(
            "Issues another API key for the organization (for rotation: revoke the old one after). "
            "The key is in this answer only. Operator key."
        ),
        operation_class=OptionalBody,
        summary="Issue another API key (shown once)",
        responses=responses(404, body=True),
    )
    async def create_key(
        self,
        org_id: FromPath[uuid.UUID],
        actions: NamedDependency[OperatorActions],
        audit_actor: NamedDependency[AuditActor],
        data: JSONBody[KeyCreate] = _UNNAMED_KEY,
    ) -> KeyCreated:
        key = await actions.issue_key(audit_actor, org_id, name=data.name, reason=data.reason)
        return KeyCreated(id=key.id, organization_id=key.org_id, prefix=key.prefix, api_key=key.api_key)

    @post(
        "/keys/{key_id:uuid}/revoke",
        operation_id="AdminRevokeKey",
        description=(
            "Revokes an API key at once in every process (cached keys are notified). A revoked key "
            "answers 401. Operator key."
        ),
        operation_class=OptionalBody,
        summary="Revoke an API key",
        status_code=200,
        responses=responses(404, body=True),
    )
    async def revoke_key(
        self,
        key_id: FromPath[uuid.UUID],
        actions: NamedDependency[OperatorActions],
        audit_actor: NamedDependency[AuditActor],
        data: JSONBody[KeyRevoke] = _NO_REASON,
    ) -> KeyRevoked:
        await actions.revoke_key(audit_actor, key_id, reason=data.reason)
        return KeyRevoked(id=key_id)

    @post(
        "/organizations/{org_id:uuid}/adjustments",
        operation_id="AdminAdjust",
        description=(
            "Writes one ledger entry of `amount_cents` (minor units, non-zero): positive credits, "
            "negative debits. A debit beyond the free balance is 402 and writes nothing. Send "
            "`Idempotency-Key` to retry safely. Operator key."
        ),
        summary="Credit (positive) or debit (negative) an organization",
        responses=responses(402, 404, 409, body=True),
        operation_class=examples.ADJUST,
    )
    async def adjust(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[uuid.UUID],
        data: JSONBody[AdjustmentIn],
        actions: NamedDependency[OperatorActions],
        audit_actor: NamedDependency[AuditActor],
        idempotency: NamedDependency[IdempotencyService],
        currencies: NamedDependency[Currencies],
        idempotency_key: IDEMPOTENCY_KEY = None,
    ) -> Response[LedgerWriteOut]:
        async def work(conn: Any) -> Posted:
            return await actions.adjust(
                audit_actor,
                org_id,
                data.amount_cents,
                conn=conn,
                description=data.description,
                metadata=data.metadata,
                reason=data.reason,
            )

        return reply(await idempotency.run(await idempotent(request, org_id), work, _encoder(currencies)))

    @post(
        "/organizations/{org_id:uuid}/refunds",
        operation_id="AdminRefund",
        description=(
            "Debits the balance by money already returned to the tenant outside Billfold (by bank "
            "transfer, say), so the ledger matches. 402 when the free balance does not cover it. "
            "Operator key."
        ),
        summary="Record money returned to the tenant outside Billfold",
        responses=responses(402, 404, 409, body=True),
        operation_class=examples.REFUND,
    )
    async def refund(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[uuid.UUID],
        data: JSONBody[RefundIn],
        actions: NamedDependency[OperatorActions],
        audit_actor: NamedDependency[AuditActor],
        idempotency: NamedDependency[IdempotencyService],
        currencies: NamedDependency[Currencies],
        idempotency_key: IDEMPOTENCY_KEY = None,
    ) -> Response[LedgerWriteOut]:
        async def work(conn: Any) -> Posted:
            return await actions.refund(
                audit_actor,
                org_id,
                data.amount_cents,
                conn=conn,
                description=data.description,
                reference=data.reference,
                reason=data.reason,
            )

        return reply(await idempotency.run(await idempotent(request, org_id), work, _encoder(currencies)))

    @put(
        "/organizations/{org_id:uuid}/status",
        operation_id="AdminSetStatus",
        description=(
            "`verified` lifts the unverified caps, `blocked` suspends the organization (its usage and"
            " charges are refused). Operator key."
        ),
        summary="verified, unverified or blocked (blocked suspends the organization)",
        responses=responses(404, body=True),
    )
    async def set_status(
        self,
        org_id: FromPath[uuid.UUID],
        data: JSONBody[StatusIn],
        actions: NamedDependency[OperatorActions],
        audit_actor: NamedDependency[AuditActor],
    ) -> OrganizationStatus:
        org = await actions.set_status(audit_actor, org_id, data.status, reason=data.reason)
        return OrganizationStatus(id=org.id, status=org.status, suspended_at=org.suspended_at)

    @put(
        "/organizations/{org_id:uuid}/overage",
        operation_id="AdminSetOverage",
        description=(
            "The overage: how many minor units below zero the free balance may go before debits are "
            "refused (0: never below zero). Operator key."
        ),
        summary="How far below zero the free balance may go",
        responses=responses(404, body=True),
    )
    async def set_overage(
        self,
        org_id: FromPath[uuid.UUID],
        data: JSONBody[OverageIn],
        actions: NamedDependency[OperatorActions],
        audit_actor: NamedDependency[AuditActor],
    ) -> OverageOut:
        account = await actions.set_overage(audit_actor, org_id, data.overage_limit_cents, reason=data.reason)
        return OverageOut(overage_limit_cents=account.overage_limit_cents)


def _encoder(currencies: Currencies) -> Any:
    def encode(posted: Posted) -> bytes:
        return msgspec.json.encode(
            LedgerWriteOut(
                transaction=posted_transaction(currencies, posted), balance=to_balance(posted.account)
            )
        )

    return encode


class KeysController(TenantController):
    """A tenant revokes one of its own keys (another organization's key is 404)."""

    path = "/v1/api-keys"
    tags = ["keys"]

    @post(
        "/{key_id:uuid}/revoke",
        operation_id="RevokeOwnKey",
        description=(
            "Revokes one of the organization's own API keys (the one sending the request included). "
            "Another organization's key is 404."
        ),
        summary="Revoke one of your API keys",
        status_code=200,
        responses=responses(404),
    )
    async def revoke(
        self, key_id: FromPath[uuid.UUID], org: NamedDependency[OrgScope], keys: NamedDependency[KeyService]
    ) -> KeyRevoked:
        await keys.revoke(key_id, org_id=org.org_id)
        return KeyRevoked(id=key_id)
