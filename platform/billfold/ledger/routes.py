"""Ledger routes: charges, holds, balance, transactions, credits."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter, QueryParameter

from billfold.api.auth import OrgScope, tenant_guard
from billfold.api.openapi import IDEMPOTENCY_KEY, OptionalBody, responses
from billfold.api.params import CURSOR, INSTANT, LIMIT, anchored, parse_cursor, parse_instant, parse_limit
from billfold.api.writes import idempotent, reply
from billfold.config import CurrencyConfig, HoldsConfig
from billfold.errors import ValidationFailed
from billfold.ledger.holds import HoldService
from billfold.ledger.idempotency import IdempotencyService, Reply
from billfold.ledger.models import ENTRY_KINDS
from billfold.ledger.rows import HoldRow, Posted
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
from billfold.ledger.service import LedgerService

Currencies = Mapping[str, CurrencyConfig]


def minor_units(currencies: Currencies, currency: str) -> int:
    config = currencies.get(currency)
    return config.minor_units if config else 2


def posted_transaction(currencies: Currencies, posted: Posted) -> Transaction:
    """The transaction object of an entry just written, in its account's currency."""
    currency = posted.account.currency
    return to_transaction(posted.entry, currency, minor_units(currencies, currency))


def _hold_result(currencies: Currencies, hold: HoldRow, posted: Posted) -> HoldResult:
    return HoldResult(
        hold=to_hold(hold),
        balance=to_balance(posted.account),
        transaction=posted_transaction(currencies, posted),
    )


_ENCODE = msgspec.json.encode
_NO_CAPTURE_DETAILS = CaptureIn()
"""A capture without a body: the whole hold."""
_KIND = "|".join(ENTRY_KINDS)
KINDS = f"(?:{_KIND})(?:,(?:{_KIND}))*"
"""The ``kind`` filter: entry kinds, comma separated."""


class LedgerController(Controller):
    path = "/v1/billing"
    tags = ["ledger"]
    guards = [tenant_guard]

    @post(
        "/charges",
        operation_id="CreateCharge",
        summary="Debit the balance (402 when short)",
        responses=responses(402, 404, 409, body=True),
    )
    async def create_charge(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ChargeIn],
        org: NamedDependency[OrgScope],
        ledger: NamedDependency[LedgerService],
        idempotency: NamedDependency[IdempotencyService],
        currencies: NamedDependency[Currencies],
        idempotency_key: IDEMPOTENCY_KEY = None,
    ) -> Response[ChargeOut]:
        fields: dict[str, Any] = {
            "description": data.description,
            "metadata": data.metadata,
            "call_id": data.call_id,
            "phone_number_id": data.phone_number_id,
            "phone_number_value": data.phone_number_value,
        }

        def charged(posted: Posted) -> bytes:
            return _ENCODE(
                ChargeOut(
                    transaction=posted_transaction(currencies, posted), balance=to_balance(posted.account)
                )
            )

        keyed = await idempotent(request, org.org_id)
        if keyed is None:
            # Nothing to store with it: the ledger picks the cheapest safe transaction.
            posted = await ledger.charge(org.org_id, data.amount_cents, **fields)
            return reply(Reply(201, charged(posted)))

        async def work(conn: Any) -> Posted:
            return await ledger.charge(org.org_id, data.amount_cents, conn=conn, **fields)

        return reply(await idempotency.run(keyed, work, charged))

    @post(
        "/holds",
        operation_id="CreateHold",
        summary="Reserve money for an in-flight operation",
        responses=responses(402, 409, body=True),
    )
    async def create_hold(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[HoldIn],
        org: NamedDependency[OrgScope],
        holds: NamedDependency[HoldService],
        idempotency: NamedDependency[IdempotencyService],
        currencies: NamedDependency[Currencies],
        holds_config: NamedDependency[HoldsConfig],
        idempotency_key: IDEMPOTENCY_KEY = None,
    ) -> Response[HoldResult]:
        expires_in = (
            holds_config.default_expires_in_seconds
            if data.expires_in_seconds is None
            else data.expires_in_seconds
        )
        if not 1 <= expires_in <= holds_config.max_expires_in_seconds:
            raise ValidationFailed(
                f"expires_in_seconds must be between 1 and {holds_config.max_expires_in_seconds}",
                field="expires_in_seconds",
            )

        async def work(conn: Any) -> HoldResult:
            hold, posted = await holds.hold(
                org.org_id,
                data.amount_cents,
                expires_in_seconds=expires_in,
                conn=conn,
                description=data.description,
                metadata=data.metadata,
            )
            return _hold_result(currencies, hold, posted)

        return reply(await idempotency.run(await idempotent(request, org.org_id), work, _ENCODE))

    @get("/holds/{hold_id:uuid}", operation_id="GetHold", summary="A hold", responses=responses(404))
    async def get_hold(
        self,
        hold_id: FromPath[uuid.UUID],
        org: NamedDependency[OrgScope],
        holds: NamedDependency[HoldService],
    ) -> HoldOut:
        return to_hold(await holds.get(org.org_id, hold_id))

    @post(
        "/holds/{hold_id:uuid}/capture",
        operation_id="CaptureHold",
        operation_class=OptionalBody,
        summary="Capture a hold, fully or partly",
        status_code=200,
        responses=responses(404, 409, body=True),
    )
    async def capture_hold(
        self,
        request: Request[Any, Any, Any],
        hold_id: FromPath[uuid.UUID],
        org: NamedDependency[OrgScope],
        holds: NamedDependency[HoldService],
        idempotency: NamedDependency[IdempotencyService],
        currencies: NamedDependency[Currencies],
        data: JSONBody[CaptureIn] = _NO_CAPTURE_DETAILS,
        idempotency_key: IDEMPOTENCY_KEY = None,
    ) -> Response[HoldResult]:

        async def work(conn: Any) -> HoldResult:
            hold, posted = await holds.capture(
                org.org_id, hold_id, data.amount_cents, conn=conn, description=data.description
            )
            return _hold_result(currencies, hold, posted)

        keyed = await idempotent(request, org.org_id)
        return reply(await idempotency.run(keyed, work, _ENCODE, status_code=200))

    @post(
        "/holds/{hold_id:uuid}/release",
        operation_id="ReleaseHold",
        summary="Release a hold",
        status_code=200,
        responses=responses(404, 409),
    )
    async def release_hold(
        self,
        request: Request[Any, Any, Any],
        hold_id: FromPath[uuid.UUID],
        org: NamedDependency[OrgScope],
        holds: NamedDependency[HoldService],
        idempotency: NamedDependency[IdempotencyService],
        currencies: NamedDependency[Currencies],
        idempotency_key: IDEMPOTENCY_KEY = None,
    ) -> Response[HoldResult]:
        async def work(conn: Any) -> HoldResult:
            hold, posted = await holds.release(org.org_id, hold_id, conn=conn)
            return _hold_result(currencies, hold, posted)

        keyed = await idempotent(request, org.org_id)
        return reply(await idempotency.run(keyed, work, _ENCODE, status_code=200))

    @get(
        "/balance",
        operation_id="GetBalance",
        summary="free, reserved and total, in minor units",
        responses=responses(404),
    )
    async def get_balance(
        self, org: NamedDependency[OrgScope], ledger: NamedDependency[LedgerService]
    ) -> Balance:
        return to_balance(await ledger.account(org.org_id))

    @get(
        "/transactions",
        operation_id="ListTransactions",
        summary="Ledger entries, offset or cursor paged",
        responses=responses(404),
    )
    async def list_transactions(
        self,
        org: NamedDependency[OrgScope],
        ledger: NamedDependency[LedgerService],
        currencies: NamedDependency[Currencies],
        limit: Annotated[int, Parameter(ge=1, le=200, description="1-200, default 50")] = 50,
        # gt=-1, not ge=0: Litestar 2.x leaves a falsy bound (0) out of the document
        offset: Annotated[
            int | None, Parameter(gt=-1, le=2**31, description="0 or more; not with `cursor`")
        ] = None,
        kind: Annotated[
            str | None,
            Parameter(
                description=f"Comma separated, of: {', '.join(ENTRY_KINDS)}",
                max_length=200,
                pattern=anchored(KINDS),
            ),
        ] = None,
        start_date: Annotated[str | None, QueryParameter(max_length=40, pattern=anchored(INSTANT))] = None,
        end_date: Annotated[str | None, QueryParameter(max_length=40, pattern=anchored(INSTANT))] = None,
        cursor: Annotated[
            str | None,
            QueryParameter(
                max_length=18, pattern=anchored(CURSOR), description="`next_cursor` of the previous page"
            ),
        ] = None,
        from_: Annotated[
            str | None, QueryParameter(name="from", max_length=40, pattern=anchored(INSTANT))
        ] = None,
        to: Annotated[str | None, QueryParameter(max_length=40, pattern=anchored(INSTANT))] = None,
        order: Annotated[
            Literal["asc", "desc"], Parameter(description="asc (oldest first, default) or desc")
        ] = "asc",
    ) -> TransactionPage:
        if kind and not re.fullmatch(KINDS, kind):
            raise ValidationFailed(f"kind must be one of {', '.join(ENTRY_KINDS)}", field="kind")
        kinds = kind.split(",") if kind else None
        if offset is not None and cursor:
            raise ValidationFailed("use either offset or cursor, not both", field="cursor")
        start = parse_instant(start_date, "start_date") or parse_instant(from_, "from")
        end = parse_instant(end_date, "end_date", end_of_day=True) or parse_instant(to, "to", end_of_day=True)
        cursor_id = parse_cursor(cursor)
        offset_mode = cursor_id is None and from_ is None and to is None
        account = await ledger.account(org.org_id)
        page = await ledger.list_entries(
            org.org_id,
            limit=limit,
            offset=offset if offset_mode else None,
            cursor=cursor_id,
            kinds=kinds,
            start=start,
            end=end,
            newest_first=order == "desc",
            count=offset_mode,
        )
        units = minor_units(currencies, account.currency)
        return TransactionPage(
            data=[to_transaction(e, account.currency, units) for e in page.entries],
            has_more=page.next_cursor is not None,
            next_cursor=page.next_cursor,
            limit=limit,
            offset=(offset or 0) if offset_mode else None,
            total=page.total,
        )


class CreditsController(Controller):
    """Document 002's credit routes, keyed by the organization in the path."""

    path = "/v1/billing/{organization_id:str}"
    tags = ["credits"]
    guards = [tenant_guard]

    @get(
        "/credits",
        operation_id="GetCredits",
        summary="The organization's credits",
        responses=responses(403, 404),
    )
    async def get_credits(
        self,
        organization_id: FromPath[str],
        org: NamedDependency[OrgScope],
        ledger: NamedDependency[LedgerService],
    ) -> CreditsOut:
        account = await ledger.account(org.org_id)
        return CreditsOut(
            organization_id=org.org_id,
            currency=account.currency,
            balance_cents=account.free_cents,
            reserved_cents=account.reserved_cents,
            total_cents=account.total_cents,
        )

    @get(
        "/credits/history",
        operation_id="GetCreditHistory",
        summary="Credit history, newest first",
        responses=responses(403, 404),
    )
    async def get_credit_history(
        self,
        organization_id: FromPath[str],
        org: NamedDependency[OrgScope],
        ledger: NamedDependency[LedgerService],
        limit: Annotated[
            str | None, QueryParameter(max_length=3, pattern=anchored(LIMIT), description="1-200, default 50")
        ] = None,
        cursor: Annotated[
            str | None,
            QueryParameter(
                max_length=18, pattern=anchored(CURSOR), description="`nextCursor` of the previous page"
            ),
        ] = None,
    ) -> CreditHistoryPage:
        page = await ledger.list_entries(
            org.org_id, limit=parse_limit(limit), cursor=parse_cursor(cursor), newest_first=True
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
