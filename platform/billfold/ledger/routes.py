"""Ledger routes: charges, holds, balance, transactions, credits."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.enums import MediaType
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, QueryParameter
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.api.auth import Tenant, provide_state, provide_tenant
from billfold.api.params import parse_cursor, parse_instant, parse_limit
from billfold.api.writes import IDEMPOTENCY_HEADER, money_write
from billfold.errors import ValidationFailed
from billfold.ledger.models import ENTRY_KINDS
from billfold.ledger.schemas import (
    Balance,
    CaptureIn,
    ChargeIn,
    ChargeOut,
    CreditHistoryItem,
    CreditHistoryPage,
    CreditsOut,
    HoldIn,
    HoldOut,
    HoldResult,
    Transaction,
    TransactionPage,
    to_balance,
    to_hold,
    to_transaction,
)
from billfold.ledger.service import HoldRow, Posted
from billfold.state import AppState

TENANT_DEPENDENCIES = {
    "tenant": Provide(provide_tenant),
    "app_state": Provide(provide_state, sync_to_thread=False),
}


def _minor_units(app_state: AppState, currency: str) -> int:
    currency_config = app_state.config.currencies.get(currency)
    return currency_config.minor_units if currency_config else 2


def posted_transaction(app_state: AppState, posted: Posted) -> Transaction:
    """The transaction object of an entry just written, in its account's currency."""
    currency = posted.account.currency
    return to_transaction(posted.entry, currency, _minor_units(app_state, currency))


def _hold_result(app_state: AppState, hold: HoldRow, posted: Posted) -> HoldResult:
    return HoldResult(
        hold=to_hold(hold),
        balance=to_balance(posted.account),
        transaction=posted_transaction(app_state, posted),
    )


class LedgerController(Controller):
    path = "/v1/billing"
    tags = ["ledger"]
    dependencies = TENANT_DEPENDENCIES

    @post("/charges", operation_id="CreateCharge", summary="Debit the balance (402 when short)")
    async def create_charge(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ChargeIn],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> Response[bytes]:
        fields: dict[str, Any] = {
            "description": data.description,
            "metadata": data.metadata,
            "call_id": data.call_id,
            "phone_number_id": data.phone_number_id,
            "phone_number_value": data.phone_number_value,
        }

        def charged(posted: Posted) -> ChargeOut:
            return ChargeOut(
                transaction=posted_transaction(app_state, posted), balance=to_balance(posted.account)
            )

        if IDEMPOTENCY_HEADER not in request.headers:
            # Nothing to store with it: the ledger picks the cheapest safe transaction.
            posted = await app_state.ledger.charge_alone(tenant.org_id, data.amount_cents, **fields)
            return Response(
                content=msgspec.json.encode(charged(posted)), status_code=201, media_type=MediaType.JSON
            )

        async def work(conn: AsyncConnection) -> ChargeOut:
            return charged(await app_state.ledger.charge(conn, tenant.org_id, data.amount_cents, **fields))

        return await money_write(app_state, request, tenant.org_id, work)

    @post("/holds", operation_id="CreateHold", summary="Reserve money for an in-flight operation")
    async def create_hold(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[HoldIn],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> Response[bytes]:
        limits = app_state.config.holds
        expires_in = (
            limits.default_expires_in_seconds if data.expires_in_seconds is None else data.expires_in_seconds
        )
        if not 1 <= expires_in <= limits.max_expires_in_seconds:
            raise ValidationFailed(
                f"expires_in_seconds must be between 1 and {limits.max_expires_in_seconds}",
                field="expires_in_seconds",
            )

        async def work(conn: AsyncConnection) -> HoldResult:
            hold, posted = await app_state.ledger.hold(
                conn,
                tenant.org_id,
                data.amount_cents,
                expires_in_seconds=expires_in,
                description=data.description,
                metadata=data.metadata,
            )
            return _hold_result(app_state, hold, posted)

        return await money_write(app_state, request, tenant.org_id, work)

    @get("/holds/{hold_id:uuid}", operation_id="GetHold")
    async def get_hold(
        self,
        hold_id: FromPath[uuid.UUID],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> HoldOut:
        async with app_state.engine.connect() as conn:
            return to_hold(await app_state.ledger.get_hold(conn, tenant.org_id, hold_id))

    @post(
        "/holds/{hold_id:uuid}/capture", operation_id="CaptureHold", summary="Capture a hold, fully or partly"
    )
    async def capture_hold(
        self,
        request: Request[Any, Any, Any],
        hold_id: FromPath[uuid.UUID],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
        data: JSONBody[CaptureIn | None] = None,
    ) -> Response[bytes]:
        body = data or CaptureIn()

        async def work(conn: AsyncConnection) -> HoldResult:
            hold, posted = await app_state.ledger.capture(
                conn, tenant.org_id, hold_id, body.amount_cents, description=body.description
            )
            return _hold_result(app_state, hold, posted)

        return await money_write(app_state, request, tenant.org_id, work, status_code=200)

    @post("/holds/{hold_id:uuid}/release", operation_id="ReleaseHold", summary="Release a hold")
    async def release_hold(
        self,
        request: Request[Any, Any, Any],
        hold_id: FromPath[uuid.UUID],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> Response[bytes]:
        async def work(conn: AsyncConnection) -> HoldResult:
            hold, posted = await app_state.ledger.release(conn, tenant.org_id, hold_id)
            return _hold_result(app_state, hold, posted)

        return await money_write(app_state, request, tenant.org_id, work, status_code=200)

    @get("/balance", operation_id="GetBalance", summary="free, reserved and total, in minor units")
    async def get_balance(
        self, tenant: NamedDependency[Tenant], app_state: NamedDependency[AppState]
    ) -> Balance:
        async with app_state.engine.connect() as conn:
            return to_balance(await app_state.ledger.account(conn, tenant.org_id))

    @get("/transactions", operation_id="ListTransactions", summary="Ledger entries, offset or cursor paged")
    async def list_transactions(
        self,
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
        limit: Annotated[str | None, Parameter(description="1-200, default 50")] = None,
        offset: Annotated[int | None, Parameter(ge=0)] = None,
        kind: Annotated[
            str | None,
            Parameter(
                description="credit, debit, adjustment, refund, hold, capture, release; comma separated"
            ),
        ] = None,
        start_date: FromQuery[str | None] = None,
        end_date: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        from_: Annotated[str | None, QueryParameter(name="from")] = None,
        to: FromQuery[str | None] = None,
        order: Annotated[str, Parameter(description="asc (oldest first, default) or desc")] = "asc",
    ) -> TransactionPage:
        page_size = parse_limit(limit)
        kinds = [k.strip() for k in kind.split(",") if k.strip()] if kind else None
        for k in kinds or []:
            if k not in ENTRY_KINDS:
                raise ValidationFailed(f"kind must be one of {', '.join(ENTRY_KINDS)}", field="kind")
        if order not in ("asc", "desc"):
            raise ValidationFailed("order must be asc or desc", field="order")
        if offset is not None and cursor:
            raise ValidationFailed("use either offset or cursor, not both", field="cursor")
        start = parse_instant(start_date, "start_date") or parse_instant(from_, "from")
        end = parse_instant(end_date, "end_date", end_of_day=True) or parse_instant(to, "to", end_of_day=True)
        cursor_id = parse_cursor(cursor)
        offset_mode = cursor_id is None and from_ is None and to is None
        async with app_state.engine.connect() as conn:
            account = await app_state.ledger.account(conn, tenant.org_id)
            page = await app_state.ledger.list_entries(
                conn,
                tenant.org_id,
                limit=page_size,
                offset=offset if offset_mode else None,
                cursor=cursor_id,
                kinds=kinds,
                start=start,
                end=end,
                newest_first=order == "desc",
                count=offset_mode,
            )
        units = _minor_units(app_state, account.currency)
        return TransactionPage(
            data=[to_transaction(e, account.currency, units) for e in page.entries],
            has_more=page.next_cursor is not None,
            next_cursor=page.next_cursor,
            limit=page_size,
            offset=(offset or 0) if offset_mode else None,
            total=page.total,
        )


class CreditsController(Controller):
    """Document 002's credit routes, keyed by the organization in the path."""

    path = "/v1/billing/{organization_id:str}"
    tags = ["credits"]
    dependencies = TENANT_DEPENDENCIES

    @get("/credits", operation_id="GetCredits")
    async def get_credits(
        self,
        organization_id: FromPath[str],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> CreditsOut:
        org_id = tenant.require(organization_id)
        async with app_state.engine.connect() as conn:
            account = await app_state.ledger.account(conn, org_id)
        return CreditsOut(
            organization_id=org_id,
            currency=account.currency,
            balance_cents=account.free_cents,
            reserved_cents=account.reserved_cents,
            total_cents=account.total_cents,
        )

    @get("/credits/history", operation_id="GetCreditHistory")
    async def get_credit_history(
        self,
        organization_id: FromPath[str],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
        limit: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> CreditHistoryPage:
        org_id = tenant.require(organization_id)
        page_size = parse_limit(limit)
        async with app_state.engine.connect() as conn:
            page = await app_state.ledger.list_entries(
                conn, org_id, limit=page_size, cursor=parse_cursor(cursor), newest_first=True
            )
        return CreditHistoryPage(
            items=[
                CreditHistoryItem(
                    id=e.id,
                    kind=e.kind,
                    amount_cents=e.amount_cents,
                    balance_after_cents=e.free_after_cents,
                    description=e.description,
                    metadata=e.metadata,
                    created_at=e.created_at,
                )
                for e in page.entries
            ],
            next_cursor=page.next_cursor,
            has_more=page.next_cursor is not None,
        )
