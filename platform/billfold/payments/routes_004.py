"""Document 004's payment routes: top-ups, payment methods and auto-reload — in its own words
(snake_case, major units as JSON numbers, upper-case currencies, its error shape), converted at
``billfold.api.family_004``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from billfold.api import family_004 as f004
from billfold.api.auth import OrgScope, TenantController
from billfold.api.openapi import IDEMPOTENCY_KEY, responses
from billfold.api.writes import idempotent, reply
from billfold.config import CurrencyConfig
from billfold.errors import ValidationFailed
from billfold.ledger.routes import minor_units
from billfold.ledger.service import LedgerService
from billfold.payments.autoreload import AutoReloadService, BillingView
from billfold.payments.methods import MethodService
from billfold.payments.profiles import AutoReloadChange, FieldNames
from billfold.payments.routes import method_out
from billfold.payments.schemas import PaymentMethodIn, PaymentMethodList, PaymentMethodOut
from billfold.payments.topups import TopUpResult, TopUpService

Currencies = Mapping[str, CurrencyConfig]

NAMES = FieldNames(
    enabled="enabled", minimum="trigger_threshold", amount="reload_amount", monthly_limit="monthly_limit"
)


def auto_reload_out(view: BillingView, units: int) -> f004.AutoReload:
    profile = view.profile
    return f004.AutoReload(
        enabled=profile.auto_reload_enabled,
        trigger_threshold=f004.major(profile.auto_reload_minimum_cents, units),
        reload_amount=f004.major(profile.auto_reload_amount_cents, units),
        monthly_limit=f004.major_or_none(profile.auto_reload_monthly_limit_cents, units),
        currency=f004.currency_code(view.account.currency),
    )


class PaymentsController(TenantController):
    """POST /v1/billing/topup, GET/POST /v1/billing/payment-methods, GET/PUT /v1/billing/auto-reload."""

    path = "/v1/billing"
    tags = ["billing (004)"]
    opt = f004.OPT

    @post(
        "/topup",
        operation_id="TopUpMajorUnits",
        description=(
            "Charges a stored payment method `amount` (major units, in the organization's currency) "
            "and credits the balance when it succeeds; a decline is 402 with where to top up instead."
        ),
        summary="Top up in major units with a stored payment method",
        responses=responses(402, 404, 409, 502, body=True, family="004"),
    )
    async def topup(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[f004.MajorTopUpRequest],
        org: NamedDependency[OrgScope],
        topups: NamedDependency[TopUpService],
        ledger: NamedDependency[LedgerService],
        currencies: NamedDependency[Currencies],
        idempotency_key: IDEMPOTENCY_KEY = None,
    ) -> Response[f004.TopUp]:
        account = await ledger.account(org.org_id)
        currency = (data.currency or account.currency).lower()
        if currency not in currencies:
            raise ValidationFailed("unknown currency", code="invalid_currency", field="currency")
        units = minor_units(currencies, currency)
        amount_cents = f004.minor_from_body(await request.body(), "amount", units)
        assert amount_cents is not None  # a required field of the decoded body

        def encode(result: TopUpResult) -> bytes:
            intent = result.intent
            after = account.free_cents + (intent.amount_cents if result.credited else 0)
            balance = f004.Balance(
                free=f004.major(after, units),
                reserved=f004.major(account.reserved_cents, units),
                total=f004.major(after + account.reserved_cents, units),
                currency=f004.currency_code(account.currency),
            )
            return msgspec.json.encode(
                f004.TopUp(
                    id=intent.id,
                    status=intent.status,
                    amount=f004.major(intent.amount_cents, units),
                    currency=f004.currency_code(intent.currency),
                    client_secret=intent.client_secret,
                    balance=balance,
                )
            )

        return reply(
            await topups.top_up(
                org.org_id,
                amount_cents,
                payment_method_id=data.payment_method_id,
                idempotent=await idempotent(request, org.org_id),
                encode=encode,
                currency=currency,
                amount_field="amount",
            )
        )

    @get(
        "/payment-methods",
        operation_id="ListPaymentMethods",
        description="The organization's saved payment methods (card, SEPA Debit) with the default marked.",
        summary="Saved payment methods (card, SEPA Debit)",
        responses=responses(404, family="004"),
    )
    async def list_payment_methods(
        self, org: NamedDependency[OrgScope], methods: NamedDependency[MethodService]
    ) -> PaymentMethodList:
        listed = await methods.list(org.org_id)
        default = next((m.id for m in listed if m.is_default), None)
        return PaymentMethodList(data=[method_out(m) for m in listed], default_payment_method_id=default)

    @post(
        "/payment-methods",
        operation_id="AddPaymentMethod",
        description=(
            "Saves a payment method created with the provider (card or SEPA Debit) and optionally "
            "makes it the default."
        ),
        summary="Save a payment method (card, SEPA Debit)",
        responses=responses(402, 404, 502, body=True, family="004"),
    )
    async def add_payment_method(
        self,
        data: JSONBody[PaymentMethodIn],
        org: NamedDependency[OrgScope],
        methods: NamedDependency[MethodService],
    ) -> PaymentMethodOut:
        return method_out(
            await methods.add(org.org_id, data.payment_method_id, make_default=data.make_default)
        )

    @get(
        "/auto-reload",
        operation_id="GetAutoReload",
        description=(
            "Auto-reload settings in major units (document 004): enabled, trigger threshold, reload "
            "amount, monthly limit."
        ),
        summary="Auto-reload settings (major units)",
        responses=responses(404, family="004"),
    )
    async def get_auto_reload(
        self,
        org: NamedDependency[OrgScope],
        autoreload: NamedDependency[AutoReloadService],
        currencies: NamedDependency[Currencies],
    ) -> f004.AutoReload:
        view = await autoreload.view(org.org_id)
        return auto_reload_out(view, minor_units(currencies, view.account.currency))

    @put(
        "/auto-reload",
        operation_id="PutAutoReload",
        description=(
            "Replaces the auto-reload settings (major units). When the free balance falls below the "
            "threshold, the saved card is charged the reload amount, at most 3 times a day and within"
            " the monthly limit; a decline is retried after 24 h."
        ),
        summary="Change auto-reload (major units): at most 3 reloads a day, a decline retried after 24 h",
        responses=responses(404, 422, body=True, family="004"),
    )
    async def put_auto_reload(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[f004.AutoReloadUpdate],
        org: NamedDependency[OrgScope],
        autoreload: NamedDependency[AutoReloadService],
        ledger: NamedDependency[LedgerService],
        currencies: NamedDependency[Currencies],
    ) -> f004.AutoReload:
        account = await ledger.account(org.org_id)
        units = minor_units(currencies, account.currency)
        body = await request.body()

        def cents(value: Any, field: str) -> Any:
            return (
                f004.minor_from_body(body, field, units)
                if value is not None and not isinstance(value, msgspec.UnsetType)
                else value
            )

        change = AutoReloadChange(
            enabled=data.enabled,
            minimum_cents=cents(data.trigger_threshold, "trigger_threshold"),
            amount_cents=cents(data.reload_amount, "reload_amount"),
            monthly_limit_cents=cents(data.monthly_limit, "monthly_limit"),
        )
        view = await autoreload.configure(org.org_id, change, NAMES)
        return auto_reload_out(view, units)


ROUTES_004: list[Any] = [PaymentsController]
