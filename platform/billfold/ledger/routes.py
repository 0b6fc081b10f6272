"""Ledger routes: charges, holds, balance, transactions, credits."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter, QueryParameter

from billfold.api import examples
from billfold.api import family_002 as f002
from billfold.api import family_004 as f004
from billfold.api.auth import OrgScope, TenantController
from billfold.api.openapi import IDEMPOTENCY_KEY, responses
from billfold.api.params import CURSOR, INSTANT, anchored, parse_cursor, parse_instant
from billfold.api.writes import idempotent, reply
from billfold.config import CurrencyConfig, HoldsConfig
from billfold.errors import ValidationFailed
from billfold.ledger.holds import HoldService
from billfold.ledger.idempotency import IdempotencyService, Reply
from billfold.ledger.models import ENTRY_KINDS
from billfold.ledger.rows import HoldRow, Posted
from billfold.ledger.schemas import (
    CaptureIn,
    ChargeIn,
    ChargeOut,
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
from billfold.orgs.service import OrgService

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


class LedgerController(TenantController):
    path = "/v1/billing"
    tags = ["ledger"]

    @post(
        "/charges",
        operation_id="CreateCharge",
        description=(
            "Debits `amount_cents` (minor units) from the free balance at once. 402 when the free "
            "balance (plus the overage) does not cover it; nothing is written then. Send "
            "`Idempotency-Key` to retry safely: a replay answers the first response."
        ),
        summary="Debit the balance (402 when short)",
        responses=responses(402, 404, 409, body=True),
        operation_class=examples.CHARGE,
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
        description=(
            "Reserves `amount_cents` out of the free balance for an operation whose final cost is not"
            " known yet; capture or release it later, or it expires after `expires_in_seconds`. 402 "
            "when the free balance does not cover it."
        ),
        summary="Reserve money for an in-flight operation",
        responses=responses(402, 409, body=True),
        operation_class=examples.HOLD,
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

    @get(
        "/holds/{hold_id:uuid}",
        operation_id="GetHold",
        summary="A hold",
        description=(
            "One hold of the organization: its amount, status (pending, captured, released, expired) "
            "and expiry."
        ),
        responses=responses(404),
    )
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
        description=(
            "Turns a pending hold into a debit: the whole hold, or `amount_cents` of it (the rest is "
            "released). A hold captured, released or expired is 409."
        ),
        operation_class=examples.CAPTURE,
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
        description=(
            "Returns a pending hold's amount to the free balance. A hold already captured, released "
            "or expired is 409."
        ),
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
        description=(
            "The free (spendable), reserved (held) and total balance in major units with the upper-"
            "case currency (document 004's shape)."
        ),
        summary="free, reserved and total, in major units (document 004)",
        responses=responses(404, family="004"),
        opt=f004.OPT,
        tags=["billing (004)"],
    )
    async def get_balance(
        self,
        org: NamedDependency[OrgScope],
        ledger: NamedDependency[LedgerService],
        currencies: NamedDependency[Currencies],
    ) -> f004.Balance:
        account = await ledger.account(org.org_id)
        units = minor_units(currencies, account.currency)
        return f004.Balance(
            free=f004.major(account.free_cents, units),
            reserved=f004.major(account.reserved_cents, units),
            total=f004.major(account.total_cents, units),
            currency=f004.currency_code(account.currency),
        )

    @get(
        "/transactions",
        operation_id="ListTransactions",
        description=(
            "The organization's ledger entries, newest first. Page with `limit` and `offset`, or with"
            " `cursor` (the `next_cursor` of the previous page, stable while entries are written). "
            "Filter by `kind` (comma separated) and by date."
        ),
        summary="Ledger entries, offset or cursor paged",
        responses=responses(404),
        operation_class=examples.TRANSACTIONS,
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


class CreditsController(TenantController):
    """Document 002's credit routes, keyed by the organization in the path (decimillicents)."""

    path = "/v1/billing/{organization_id:str}"
    tags = ["credits (002)"]
    opt = f002.OPT

    @get(
        "/credits",
        operation_id="GetCredits",
        description="The organization's balance, reserved and available credits in document 002's shape.",
        summary="The organization's credits: balance, reserved, available",
        responses=responses(403, 404, family="002"),
    )
    async def get_credits(
        self,
        organization_id: FromPath[str],
        org: NamedDependency[OrgScope],
        ledger: NamedDependency[LedgerService],
        orgs: NamedDependency[OrgService],
    ) -> f002.Credits:
        account = await ledger.account(org.org_id)
        found = await orgs.get(org.org_id)
        return f002.Credits(
            credits_balance_decimillicents=f002.to_decimillicents(account.total_cents),
            reserved_credits_decimillicents=f002.to_decimillicents(account.reserved_cents),
            available_decimillicents=f002.to_decimillicents(account.free_cents),
            is_suspended=found.is_suspended,
            suspended_at=found.suspended_at,
            payment_grace_period_ends_at=None,
        )

    @get(
        "/credits/history",
        operation_id="GetCreditHistory",
        description=(
            "The organization's credit movements, newest first, in document 002's shape; `limit` is "
            "clamped to 1..100."
        ),
        summary="Credit history, newest first (limit clamped to 1..100, default 50)",
        responses=responses(403, 404, family="002"),
    )
    async def get_credit_history(
        self,
        organization_id: FromPath[str],
        org: NamedDependency[OrgScope],
        ledger: NamedDependency[LedgerService],
        limit: Annotated[
            str | None,
            QueryParameter(
                max_length=20,
                description="Parsed leniently: missing or not a number is 50, "
                "any number is clamped to 1..100",
            ),
        ] = None,
        cursor: Annotated[
            str | None,
            QueryParameter(
                max_length=36,
                pattern=f002.CURSOR_PATTERN,
                description="`cursor` of the previous page (the UUID of its last item)",
            ),
        ] = None,
    ) -> f002.CreditHistory:
        page = await ledger.list_entries(
            org.org_id,
            limit=f002.lenient_limit(limit),
            cursor=f002.entry_id_of(cursor) if cursor else None,
            newest_first=True,
        )
        items = [
            f002.CreditHistoryItem(
                id=f002.entry_uuid(e.id),
                entry_type=f002.entry_type(e.kind, e.metadata),
                amount_decimillicents=f002.to_decimillicents(
                    e.free_delta_cents if e.kind in ("hold", "release") else e.amount_cents
                ),
                reason=e.description or None,
                reference_id=e.reference
                or (str(e.hold_id) if e.hold_id else None)
                or e.metadata.get("payment_intent_id"),
                balance_after=f002.to_decimillicents(e.free_after_cents),
                created_at=e.created_at,
            )
            for e in page.entries
        ]
        last = items[-1].id if items and page.next_cursor is not None else None
        return f002.CreditHistory(items=items, cursor=str(last) if last else None, has_more=last is not None)
