"""Billing-account and payment routes of documents 000, 001, 002, 003 and 004 over one set of services."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody

from billfold.api import examples
from billfold.api.auth import OrgScope, TenantController
from billfold.api.family_002 import WebhookAnswer
from billfold.api.openapi import IDEMPOTENCY_KEY, responses
from billfold.api.writes import idempotent, reply
from billfold.config import CurrencyConfig
from billfold.errors import ValidationFailed
from billfold.ledger.routes import minor_units
from billfold.orgs.service import OrgService
from billfold.payments.autoreload import AutoReloadService, BillingView
from billfold.payments.methods import MethodRow, MethodService
from billfold.payments.provider import InvalidWebhook, PaymentProvider, SetupIntent
from billfold.payments.schemas import (
    SNAKE_NAMES,
    BillingAccount,
    BillingAccountPatch,
    CustomerBillingIn,
    CustomerBillingOut,
    DefaultMethodIn,
    PaymentMethodOut,
    SetupIntentOut,
    TopUpIn,
    TopUpOut,
    to_billing_account,
)
from billfold.payments.topups import TopUpResult, TopUpService
from billfold.payments.webhooks import WebhookService
from billfold.usage.plans import PlanService

Currencies = Mapping[str, CurrencyConfig]


def _account(view: BillingView, currencies: Currencies) -> BillingAccount:
    return to_billing_account(view, minor_units(currencies, view.account.currency))


def _encode_top_up(result: TopUpResult) -> bytes:
    intent = result.intent
    return msgspec.json.encode(
        TopUpOut(
            payment_intent_id=intent.id,
            status=intent.status,
            client_secret=intent.client_secret,
            amount_cents=intent.amount_cents,
            currency=intent.currency,
            credited=result.credited,
        )
    )


async def _top_up(
    topups: TopUpService, request: Request[Any, Any, Any], org_id: uuid.UUID, data: TopUpIn
) -> Response[TopUpOut]:
    """Documents 000, 001 and 002 top up the same way (minor units)."""
    return reply(
        await topups.top_up(
            org_id,
            data.amount_cents,
            payment_method_id=data.payment_method_id,
            idempotent=await idempotent(request, org_id),
            encode=_encode_top_up,
        )
    )


def _setup_out(setup: SetupIntent) -> SetupIntentOut:
    return SetupIntentOut(setup_intent_id=setup.id, client_secret=setup.client_secret, status=setup.status)


def method_out(method: MethodRow) -> PaymentMethodOut:
    return PaymentMethodOut(
        id=method.id,
        type=method.type,
        brand=method.brand,
        last4=method.last4,
        exp_month=method.exp_month,
        exp_year=method.exp_year,
        is_default=method.is_default,
        status=method.status,
    )


class OrgBillingController(TenantController):
    """Document 000: /v1/orgs/{org_id}/billing."""

    path = "/v1/orgs/{org_id:str}/billing"
    tags = ["billing"]

    @get(
        "/",
        operation_id="GetOrgBillingAccount",
        summary="The billing account",
        description=(
            "The billing account of the organization in the path (its key's own): auto-reload "
            "settings, its state, and the default payment method."
        ),
        responses=responses(403, 404),
    )
    async def get_account(
        self,
        org_id: FromPath[str],
        org: NamedDependency[OrgScope],
        autoreload: NamedDependency[AutoReloadService],
        currencies: NamedDependency[Currencies],
    ) -> BillingAccount:
        return _account(await autoreload.view(org.org_id), currencies)

    @patch(
        "/",
        operation_id="UpdateOrgBillingAccount",
        description=(
            "Changes the auto-reload settings; enabling it needs `auto_reload_minimum_cents` and "
            "`auto_reload_amount_cents`. Absent fields keep their value."
        ),
        summary="Change the auto-reload settings",
        responses=responses(403, 404, 422, body=True),
    )
    async def patch_account(
        self,
        org_id: FromPath[str],
        data: JSONBody[BillingAccountPatch],
        org: NamedDependency[OrgScope],
        autoreload: NamedDependency[AutoReloadService],
        currencies: NamedDependency[Currencies],
    ) -> BillingAccount:
        return _account(await autoreload.configure(org.org_id, data.change(), SNAKE_NAMES), currencies)

    @post(
        "/top-up",
        operation_id="OrgTopUp",
        description=(
            "Charges the saved default card `amount_cents` and credits the balance when the payment "
            "succeeds. A card that needs 3-D Secure answers 402 with `next_action`; a decline is 402 "
            "and credits nothing. Send `Idempotency-Key` to retry safely."
        ),
        summary="Charge the saved card and credit the balance",
        responses=responses(402, 403, 404, 409, 502, body=True),
        operation_class=examples.TOP_UP,
    )
    async def top_up(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[str],
        data: JSONBody[TopUpIn],
        org: NamedDependency[OrgScope],
        topups: NamedDependency[TopUpService],
        idempotency_key: IDEMPOTENCY_KEY = None,
    ) -> Response[TopUpOut]:
        return await _top_up(topups, request, org.org_id, data)

    @post(
        "/setup-intent",
        operation_id="OrgSetupIntent",
        description=(
            "Starts saving a card with the payment provider; the browser confirms it with Stripe.js "
            "and the card becomes the default payment method."
        ),
        summary="Start saving a card (Stripe.js confirms it)",
        responses=responses(403, 404, 502),
    )
    async def setup_intent(
        self, org_id: FromPath[str], org: NamedDependency[OrgScope], methods: NamedDependency[MethodService]
    ) -> SetupIntentOut:
        return _setup_out(await methods.create_setup_intent(org.org_id))


class BillingController(TenantController):
    """Document 001 (/v1/billing) and 004's auto-reload and payments."""

    path = "/v1/billing"
    tags = ["billing"]

    @get(
        "/",
        operation_id="GetBillingAccount",
        summary="The billing account",
        description=(
            "The billing account of the key's organization: auto-reload settings, its state, and the "
            "default payment method."
        ),
        responses=responses(404),
    )
    async def get_account(
        self,
        org: NamedDependency[OrgScope],
        autoreload: NamedDependency[AutoReloadService],
        currencies: NamedDependency[Currencies],
    ) -> BillingAccount:
        return _account(await autoreload.view(org.org_id), currencies)

    @patch(
        "/",
        operation_id="UpdateBillingAccount",
        description=(
            "Changes the auto-reload settings; enabling it needs `auto_reload_minimum_cents` and "
            "`auto_reload_amount_cents`. Absent fields keep their value."
        ),
        summary="Change the auto-reload settings",
        responses=responses(404, 422, body=True),
    )
    async def patch_account(
        self,
        data: JSONBody[BillingAccountPatch],
        org: NamedDependency[OrgScope],
        autoreload: NamedDependency[AutoReloadService],
        currencies: NamedDependency[Currencies],
    ) -> BillingAccount:
        return _account(await autoreload.configure(org.org_id, data.change(), SNAKE_NAMES), currencies)

    @post(
        "/top-up",
        operation_id="TopUp",
        description=(
            "Charges the saved default card `amount_cents` and credits the balance when the payment "
            "succeeds. A card that needs 3-D Secure answers 402 with `next_action`; a decline is 402 "
            "and credits nothing. Send `Idempotency-Key` to retry safely."
        ),
        summary="Charge the saved card and credit the balance",
        responses=responses(402, 404, 409, 502, body=True),
        operation_class=examples.TOP_UP,
    )
    async def top_up(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[TopUpIn],
        org: NamedDependency[OrgScope],
        topups: NamedDependency[TopUpService],
        idempotency_key: IDEMPOTENCY_KEY = None,
    ) -> Response[TopUpOut]:
        return await _top_up(topups, request, org.org_id, data)

    @post(
        "/setup-intent",
        operation_id="SetupIntent",
        description=(
            "Starts saving a card with the payment provider; the browser confirms it with Stripe.js "
            "and the card becomes the default payment method."
        ),
        summary="Start saving a card (Stripe.js confirms it)",
        responses=responses(404, 502),
    )
    async def setup_intent(
        self, org: NamedDependency[OrgScope], methods: NamedDependency[MethodService]
    ) -> SetupIntentOut:
        return _setup_out(await methods.create_setup_intent(org.org_id))

    @post(
        "/default-payment-method",
        operation_id="SetDefaultPaymentMethod",
        description=(
            "Attaches a payment method saved with the provider and makes it the default for top-ups "
            "and auto-reload."
        ),
        summary="Save a payment method as the default",
        status_code=200,
        responses=responses(402, 404, 502, body=True),
    )
    async def default_payment_method(
        self,
        data: JSONBody[DefaultMethodIn],
        org: NamedDependency[OrgScope],
        methods: NamedDependency[MethodService],
        autoreload: NamedDependency[AutoReloadService],
        currencies: NamedDependency[Currencies],
    ) -> BillingAccount:
        await methods.add(org.org_id, data.payment_method_id, make_default=True)
        return _account(await autoreload.view(org.org_id), currencies)


class CustomerBillingController(TenantController):
    """Document 003: POST /billing gets or creates the provider customer, optionally a checkout session."""

    path = "/billing"
    tags = ["payments"]

    @post(
        "/",
        operation_id="GetOrCreateCustomer",
        description=(
            "Creates (or finds) the organization's customer at the payment provider and, when plan "
            "steps are named, a checkout for them."
        ),
        summary="The provider customer, and a checkout for plan steps",
        status_code=200,
        responses=responses(404, 502, body=True),
    )
    async def billing(
        self,
        data: JSONBody[CustomerBillingIn],
        org: NamedDependency[OrgScope],
        methods: NamedDependency[MethodService],
        topups: NamedDependency[TopUpService],
        orgs: NamedDependency[OrgService],
        plan_service: NamedDependency[PlanService],
        currencies: NamedDependency[Currencies],
    ) -> CustomerBillingOut:
        steps = []
        for ladder, price_id, field in (
            ("message", data.message_price_id, "messagePriceId"),
            ("budget", data.budget_price_id, "budgetPriceId"),
        ):
            if price_id is None:
                continue
            step = plan_service.step_for_price(price_id, ladder)
            if step is None:
                raise ValidationFailed(
                    f"{field} {price_id!r} is not the price of a {ladder} step in billing.yaml",
                    code="unknown_price",
                    field=field,
                )
            steps.append((price_id, step))
        customer_id = await methods.ensure_customer(org.org_id)
        session = None
        if steps:
            session = await topups.checkout(
                org.org_id,
                amount_cents=None,
                success_url=data.success_url,
                cancel_url=data.cancel_url,
                price_ids=[price_id for price_id, _ in steps],
                metadata={"plan_steps": ",".join(step for _, step in steps)},
            )
        found = await orgs.get(org.org_id)
        plan = await plan_service.get(org.org_id, found.created_at)
        units = minor_units(currencies, found.currency)

        def major(cents: int | None) -> float | None:
            return None if cents is None else cents / 10**units

        pending: dict[str, Any] = {}
        if plan.pending_effective is not None:
            message = plan_service.step("message", plan.pending_message_step or plan.message_step)
            budget = plan_service.step("budget", plan.pending_budget_step or plan.budget_step)
            pending = {
                "pending_downgrade_messages_cap": message.messages_cap or 0,
                "pending_downgrade_cost_cap": major(budget.cost_cap or 0),
                "pending_downgrade_sms_cap": major(budget.sms_cap),
                "pending_downgrade_call_cap": major(budget.call_cap),
                "pending_downgrade_effective_date": plan.pending_effective.isoformat(),
                "pending_downgrade_account_type": "free" if not (message.paid or budget.paid) else None,
            }
        return CustomerBillingOut(
            organization_id=str(found.id),
            organization_type=found.organization_type,
            creator=found.creator,
            messages_cap=plan.messages_cap or 0,
            cost_cap=major(plan.cost_cap or 0) or 0.0,
            created_at=found.created_at.isoformat(),
            updated_at=found.updated_at.isoformat(),
            anniversary_date=plan.anniversary.isoformat(),
            allow_overage=plan.allow_overage,
            name=found.name,
            status=found.status,
            stripe_customer_id=customer_id,
            sms_cap=major(plan.sms_cap),
            call_cap=major(plan.call_cap),
            session_id=session.id if session else None,
            url=session.url if session else None,
            **pending,
        )


_WEBHOOK_OPERATION_IDS = {"/v1/stripe/webhook": "StripeWebhook", "/v1/webhooks/stripe": "WebhooksStripe"}
"""The two paths of the documents (001's and 002's), each with its own operation id."""


def _webhook_operation_id(_handler: Any, _method: Any, components: list[Any]) -> str:
    return _WEBHOOK_OPERATION_IDS["/" + "/".join(str(c) for c in components)]


@post(
    list(_WEBHOOK_OPERATION_IDS),
    operation_id=_webhook_operation_id,
    description=(
        "Receives the payment provider's events. The signature is verified against the webhook secret"
        " (400 when it does not match) and each event is applied once, however often it is delivered."
        " No API key."
    ),
    summary="Provider webhooks (signature verified; each event applied once)",
    status_code=200,
    tags=["webhooks"],
    security=[{}],
    responses=responses(413, public=True),
)
async def provider_webhook(
    request: Request[Any, Any, Any],
    provider: NamedDependency[PaymentProvider],
    webhooks: NamedDependency[WebhookService],
    wake_worker: NamedDependency[Any],
    stripe_signature: Annotated[
        str | None,
        HeaderParameter(
            name="Stripe-Signature",
            required=False,
            description="The provider's signature of the body: an event without a valid one is "
            "400 `invalid_signature` (so is any event while the local provider is active).",
        ),
    ] = None,
) -> WebhookAnswer:
    """Provider webhooks: signature verified by the provider, each event applied once. The answer is
    document 002's (``{processed, idempotent, eventId}``: ``idempotent`` when the event id was seen
    before and nothing was done again)."""
    payload = await request.body()
    try:
        event = provider.parse_webhook(payload, request.headers)
    except InvalidWebhook as exc:
        raise ValidationFailed(exc.message, code="invalid_signature", field="Stripe-Signature") from None
    fresh = await webhooks.handle(event)
    wake_worker()
    return WebhookAnswer(processed=True, idempotent=not fresh, event_id=event.id)


PAYMENT_ROUTES: list[Any] = [
    OrgBillingController,
    BillingController,
    CustomerBillingController,
    provider_webhook,
]
