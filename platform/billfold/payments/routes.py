"""Billing-account routes of documents 000, 001, 002 and 004 over one payment service."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from litestar import Controller, Request, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody

from billfold.api.auth import Tenant, provide_state
from billfold.api.writes import IDEMPOTENCY_HEADER
from billfold.errors import NotFound, ValidationFailed
from billfold.ledger.routes import TENANT_DEPENDENCIES, _minor_units
from billfold.money import major_to_minor
from billfold.payments.provider import InvalidWebhook, SetupIntent
from billfold.payments.schemas import (
    AUTO_RELOAD_NAMES,
    CAMEL_NAMES,
    SNAKE_NAMES,
    AutoReload,
    AutoReloadPut,
    BillingAccount,
    BillingAccountPatch,
    CheckoutIn,
    CompleteLocalIn,
    CompleteLocalOut,
    CustomerBillingIn,
    CustomerBillingOut,
    DefaultMethodIn,
    MajorTopUpIn,
    OrganizationBilling,
    OrganizationBillingPatch,
    PaymentMethodIn,
    PaymentMethodList,
    PaymentMethodOut,
    PortalIn,
    RequiresActionOut,
    SessionOut,
    SetupIntentOut,
    TopUpIn,
    TopUpOut,
    to_auto_reload,
    to_billing_account,
    to_organization_billing,
)
from billfold.payments.service import TopUpResult
from billfold.state import AppState


async def _account(app_state: AppState, tenant: Tenant) -> BillingAccount:
    async with app_state.engine.connect() as conn:
        view = await app_state.payments.billing_view(conn, tenant.org_id)
    return to_billing_account(view, _minor_units(app_state, view.account.currency))


async def _patch_account(app_state: AppState, tenant: Tenant, data: BillingAccountPatch) -> BillingAccount:
    async with app_state.engine.begin() as conn:
        view = await app_state.payments.update_auto_reload(conn, tenant.org_id, data.change(), SNAKE_NAMES)
    return to_billing_account(view, _minor_units(app_state, view.account.currency))


class OrgBillingController(Controller):
    """Document 000: /v1/orgs/{org_id}/billing."""

    path = "/v1/orgs/{org_id:str}/billing"
    tags = ["billing"]
    dependencies = TENANT_DEPENDENCIES

    @get("/", operation_id="GetOrgBillingAccount")
    async def get_account(
        self, org_id: FromPath[str], tenant: NamedDependency[Tenant], app_state: NamedDependency[AppState]
    ) -> BillingAccount:
        tenant.require(org_id)
        return await _account(app_state, tenant)

    @patch("/", operation_id="UpdateOrgBillingAccount")
    async def patch_account(
        self,
        org_id: FromPath[str],
        data: JSONBody[BillingAccountPatch],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> BillingAccount:
        tenant.require(org_id)
        return await _patch_account(app_state, tenant, data)


class BillingController(Controller):
    """Document 001 (/v1/billing) and 004's auto-reload."""

    path = "/v1/billing"
    tags = ["billing"]
    dependencies = TENANT_DEPENDENCIES

    @get("/", operation_id="GetBillingAccount")
    async def get_account(
        self, tenant: NamedDependency[Tenant], app_state: NamedDependency[AppState]
    ) -> BillingAccount:
        return await _account(app_state, tenant)

    @patch("/", operation_id="UpdateBillingAccount")
    async def patch_account(
        self,
        data: JSONBody[BillingAccountPatch],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> BillingAccount:
        return await _patch_account(app_state, tenant, data)

    @get("/auto-reload", operation_id="GetAutoReload")
    async def get_auto_reload(
        self, tenant: NamedDependency[Tenant], app_state: NamedDependency[AppState]
    ) -> AutoReload:
        async with app_state.engine.connect() as conn:
            return to_auto_reload(await app_state.payments.billing_view(conn, tenant.org_id))

    @put("/auto-reload", operation_id="PutAutoReload")
    async def put_auto_reload(
        self,
        data: JSONBody[AutoReloadPut],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> AutoReload:
        async with app_state.engine.begin() as conn:
            view = await app_state.payments.update_auto_reload(
                conn, tenant.org_id, data.change(), AUTO_RELOAD_NAMES
            )
        return to_auto_reload(view)


class OrganizationBillingController(Controller):
    """Document 002: /v1/organizations/{organizationId}/billing."""

    path = "/v1/organizations/{organization_id:str}/billing"
    tags = ["billing"]
    dependencies = TENANT_DEPENDENCIES

    @get("/", operation_id="GetOrganizationBilling")
    async def get_billing(
        self,
        organization_id: FromPath[str],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> OrganizationBilling:
        org_id = tenant.require(organization_id)
        async with app_state.engine.connect() as conn:
            return to_organization_billing(await app_state.payments.billing_view(conn, org_id))

    @patch("/", operation_id="UpdateOrganizationBilling")
    async def patch_billing(
        self,
        organization_id: FromPath[str],
        data: JSONBody[OrganizationBillingPatch],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> OrganizationBilling:
        org_id = tenant.require(organization_id)
        async with app_state.engine.begin() as conn:
            view = await app_state.payments.update_auto_reload(conn, org_id, data.change(), CAMEL_NAMES)
        return to_organization_billing(view)


# -- payments: top-ups, methods, checkout, webhooks ---------------------------------------------------


def _top_up_out(result: TopUpResult) -> TopUpOut:
    intent = result.intent
    return TopUpOut(
        payment_intent_id=intent.id,
        status=intent.status,
        client_secret=intent.client_secret,
        amount_cents=intent.amount_cents,
        currency=intent.currency,
        credited=result.credited,
    )


async def _top_up(
    app_state: AppState, request: Request[Any, Any, Any], org_id: uuid.UUID, data: TopUpIn
) -> TopUpOut:
    result = await app_state.payments.top_up(
        org_id,
        data.amount_cents,
        payment_method_id=data.payment_method_id,
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
    )
    return _top_up_out(result)


def _setup_out(setup: SetupIntent) -> SetupIntentOut:
    return SetupIntentOut(setup_intent_id=setup.id, client_secret=setup.client_secret, status=setup.status)


def _method_out(row: Any, default_id: str | None) -> PaymentMethodOut:
    return PaymentMethodOut(
        id=row.provider_method_id,
        type=row.type,
        brand=row.brand,
        last4=row.last4,
        exp_month=row.exp_month,
        exp_year=row.exp_year,
        is_default=row.provider_method_id == default_id,
        status=row.status,
    )


class OrgPaymentsController(Controller):
    """Document 000's payment routes."""

    path = "/v1/orgs/{org_id:str}/billing"
    tags = ["payments"]
    dependencies = TENANT_DEPENDENCIES

    @post("/top-up", operation_id="OrgTopUp")
    async def top_up(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[str],
        data: JSONBody[TopUpIn],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> TopUpOut:
        return await _top_up(app_state, request, tenant.require(org_id), data)

    @post("/setup-intent", operation_id="OrgSetupIntent")
    async def setup_intent(
        self, org_id: FromPath[str], tenant: NamedDependency[Tenant], app_state: NamedDependency[AppState]
    ) -> SetupIntentOut:
        return _setup_out(await app_state.payments.create_setup_intent(tenant.require(org_id)))


class PaymentsController(Controller):
    """Documents 001, 002 and 004 on /v1/billing."""

    path = "/v1/billing"
    tags = ["payments"]
    dependencies = TENANT_DEPENDENCIES

    @post("/top-up", operation_id="TopUp")
    async def top_up(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[TopUpIn],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> TopUpOut:
        return await _top_up(app_state, request, tenant.org_id, data)

    @post("/topup", operation_id="TopUpMajorUnits")
    async def topup_major(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[MajorTopUpIn],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> TopUpOut:
        async with app_state.engine.connect() as conn:
            account = await app_state.ledger.account(conn, tenant.org_id)
        currency = (data.currency or account.currency).lower()
        if currency not in app_state.config.currencies:
            raise ValidationFailed("unknown currency", code="invalid_currency", field="currency")
        amount_cents = major_to_minor(data.amount, _minor_units(app_state, currency), field="amount")
        result = await app_state.payments.top_up(
            tenant.org_id,
            amount_cents,
            payment_method_id=data.payment_method_id,
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
            currency=currency,
            amount_field="amount",
        )
        return _top_up_out(result)

    @post("/setup-intent", operation_id="SetupIntent")
    async def setup_intent(
        self, tenant: NamedDependency[Tenant], app_state: NamedDependency[AppState]
    ) -> SetupIntentOut:
        return _setup_out(await app_state.payments.create_setup_intent(tenant.org_id))

    @post("/default-payment-method", operation_id="SetDefaultPaymentMethod", status_code=200)
    async def default_payment_method(
        self,
        data: JSONBody[DefaultMethodIn],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> BillingAccount:
        await app_state.payments.add_payment_method(tenant.org_id, data.payment_method_id, make_default=True)
        return await _account(app_state, tenant)

    @get("/payment-methods", operation_id="ListPaymentMethods")
    async def list_payment_methods(
        self, tenant: NamedDependency[Tenant], app_state: NamedDependency[AppState]
    ) -> PaymentMethodList:
        rows, default_id = await app_state.payments.list_methods(tenant.org_id)
        return PaymentMethodList(
            data=[_method_out(r, default_id) for r in rows], default_payment_method_id=default_id
        )

    @post("/payment-methods", operation_id="AddPaymentMethod")
    async def add_payment_method(
        self,
        data: JSONBody[PaymentMethodIn],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> PaymentMethodOut:
        method = await app_state.payments.add_payment_method(
            tenant.org_id, data.payment_method_id, make_default=data.make_default
        )
        rows, default_id = await app_state.payments.list_methods(tenant.org_id)
        row = next(r for r in rows if r.provider_method_id == method.id)
        return _method_out(row, default_id)

    @post("/checkout", operation_id="CreateCheckoutSession", status_code=200)
    async def checkout(
        self,
        data: JSONBody[CheckoutIn],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> SessionOut:
        session = await app_state.payments.checkout(
            tenant.org_id,
            amount_cents=data.amount_cents,
            success_url=data.success_url,
            cancel_url=data.cancel_url,
            price_ids=data.price_ids,
        )
        return SessionOut(session_id=session.id, url=session.url)

    @post("/portal", operation_id="CreatePortalSession", status_code=200)
    async def portal(
        self, data: JSONBody[PortalIn], tenant: NamedDependency[Tenant], app_state: NamedDependency[AppState]
    ) -> SessionOut:
        session = await app_state.payments.portal(tenant.org_id, data.return_url)
        return SessionOut(session_id=session.id, url=session.url)


class OrganizationPaymentsController(Controller):
    """Document 002's routes keyed by organization."""

    path = "/v1/billing/{organization_id:str}"
    tags = ["payments"]
    dependencies = TENANT_DEPENDENCIES

    @post("/top-up", operation_id="OrganizationTopUp")
    async def top_up(
        self,
        request: Request[Any, Any, Any],
        organization_id: FromPath[str],
        data: JSONBody[TopUpIn],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> TopUpOut:
        return await _top_up(app_state, request, tenant.require(organization_id), data)

    @post("/dev/complete-local", operation_id="CompleteLocalPayment", status_code=200)
    async def complete_local(
        self,
        organization_id: FromPath[str],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
        data: JSONBody[CompleteLocalIn | None] = None,
    ) -> CompleteLocalOut:
        if app_state.config.is_production or app_state.provider.name != "local":
            raise NotFound("not found", code="not_found")
        org_id = tenant.require(organization_id)
        intent = await app_state.payments.complete_local(
            org_id, (data or CompleteLocalIn()).payment_intent_id
        )
        async with app_state.engine.connect() as conn:
            account = await app_state.ledger.account(conn, org_id)
        return CompleteLocalOut(
            payment_intent_id=intent.id,
            status=intent.status,
            amount_cents=intent.amount_cents,
            balance_cents=account.free_cents,
        )

    @get("/auto-recharge/requires-action", operation_id="AutoRechargeRequiresAction")
    async def requires_action(
        self,
        organization_id: FromPath[str],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> RequiresActionOut:
        profile = await app_state.payments.requires_action(tenant.require(organization_id))
        return RequiresActionOut(
            requires_action=profile.reload_action is not None,
            paused=profile.reload_paused,
            consecutive_failures=profile.reload_failures,
            action=profile.reload_action,
        )


class CustomerBillingController(Controller):
    """Document 003: POST /billing gets or creates the provider customer, optionally a checkout session."""

    path = "/billing"
    tags = ["payments"]
    dependencies = TENANT_DEPENDENCIES

    @post("/", operation_id="GetOrCreateCustomer", status_code=200)
    async def billing(
        self,
        data: JSONBody[CustomerBillingIn],
        tenant: NamedDependency[Tenant],
        app_state: NamedDependency[AppState],
    ) -> CustomerBillingOut:
        customer_id = await app_state.payments.ensure_customer(tenant.org_id)
        price_ids = [p for p in (data.message_price_id, data.budget_price_id) if p]
        session = None
        if price_ids:
            session = await app_state.payments.checkout(
                tenant.org_id,
                amount_cents=None,
                success_url=data.success_url,
                cancel_url=data.cancel_url,
                price_ids=price_ids,
            )
        async with app_state.engine.connect() as conn:
            org = await app_state.orgs.get(conn, tenant.org_id)
            account = await app_state.ledger.account(conn, tenant.org_id)
        created = (
            org.created_at
            if isinstance(org.created_at, datetime.datetime)
            else datetime.datetime.now(datetime.UTC)
        )
        updated = org.updated_at if isinstance(org.updated_at, datetime.datetime) else created
        return CustomerBillingOut(
            organization_id=str(org.id),
            organization_type=org.organization_type,
            creator=org.creator,
            messages_cap=0,
            cost_cap=0,
            created_at=created.isoformat(),
            updated_at=updated.isoformat(),
            anniversary_date=created.date().isoformat(),
            allow_overage=account.overage_limit_cents > 0,
            name=org.name,
            status=org.status,
            stripe_customer_id=customer_id,
            session_id=session.id if session else None,
            url=session.url if session else None,
        )


_WEBHOOK_DEPENDENCIES = {"app_state": Provide(provide_state, sync_to_thread=False)}


_WEBHOOK_OPERATION_IDS = {"/v1/stripe/webhook": "StripeWebhook", "/v1/webhooks/stripe": "WebhooksStripe"}
"""The two paths of the documents (001's and 002's), each with its own operation id."""


def _webhook_operation_id(_handler: Any, _method: Any, components: list[Any]) -> str:
    return _WEBHOOK_OPERATION_IDS["/" + "/".join(str(c) for c in components)]


@post(
    list(_WEBHOOK_OPERATION_IDS),
    operation_id=_webhook_operation_id,
    status_code=200,
    tags=["webhooks"],
    dependencies=_WEBHOOK_DEPENDENCIES,
)
async def provider_webhook(
    request: Request[Any, Any, Any], app_state: NamedDependency[AppState]
) -> dict[str, Any]:
    """Provider webhooks: signature verified by the provider, each event applied once."""
    payload = await request.body()
    try:
        event = app_state.provider.parse_webhook(payload, request.headers)
    except InvalidWebhook as exc:
        raise ValidationFailed(exc.message, code="invalid_signature", field="Stripe-Signature") from None
    fresh = await app_state.payments.handle_event(event)
    app_state.worker.wake()
    return {"received": True, "duplicate": not fresh, "type": event.type}


PAYMENT_ROUTES: list[Any] = [
    OrgPaymentsController,
    PaymentsController,
    OrganizationPaymentsController,
    CustomerBillingController,
    provider_webhook,
]
