"""Document 002's billing routes: settings, hosted top-ups, checkout, portal, local completion and
what a failed auto-recharge needs — in its own words (camelCase, decimillicents, tagged errors),
converted at ``billfold.api.family_002``."""

from __future__ import annotations

import datetime
from typing import Any

from litestar import get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from billfold.api import family_002 as f002
from billfold.api.auth import OrgScope, TenantController
from billfold.api.openapi import OptionalBody, responses
from billfold.config import PlansConfig
from billfold.errors import Forbidden, NotFound
from billfold.orgs.service import OrgService
from billfold.payments.autoreload import AutoReloadService, BillingView
from billfold.payments.profiles import AutoReloadChange, FieldNames, ProfileService, Settings
from billfold.payments.provider import PaymentProvider
from billfold.payments.topups import TopUpService

NAMES = FieldNames(
    enabled="autoRechargeEnabled",
    minimum="autoRechargeThresholdDecimillicents",
    amount="autoRechargeAmountDecimillicents",
    monthly_limit="autoRechargeMonthlyLimitDecimillicents",
    merged=True,
)


def settings_out(view: BillingView, org_suspended_at: datetime.datetime | None) -> f002.BillingSettings:
    profile, account = view.profile, view.account
    return f002.BillingSettings(
        organization_id=account.org_id,
        billing_email=profile.billing_email,
        stripe_customer_id=profile.customer_id,
        stripe_subscription_id=None,
        stripe_payment_method_id=profile.default_payment_method_id,
        stripe_metered_subscription_item_id=None,
        credits_balance_decimillicents=f002.to_decimillicents(account.total_cents),
        reserved_credits_decimillicents=f002.to_decimillicents(account.reserved_cents),
        auto_recharge_enabled=profile.auto_reload_enabled,
        auto_recharge_threshold_decimillicents=f002.to_decimillicents(profile.auto_reload_minimum_cents),
        auto_recharge_amount_decimillicents=f002.to_decimillicents(profile.auto_reload_amount_cents),
        usage_cap_decimillicents=f002.to_decimillicents_or_none(profile.usage_cap_cents),
        is_subscribed=False,
        subscription_status=None,
        subscription_plan=None,
        subscription_started_at=None,
        subscription_ends_at=None,
        subscription_current_period_end=None,
        suspended_at=org_suspended_at,
        payment_grace_period_ends_at=None,
    )


def _change(data: f002.BillingSettingsPatch) -> tuple[AutoReloadChange, Settings]:
    def cents(value: Any, field: str) -> Any:
        return f002.to_cents(value, field) if isinstance(value, int) else value

    change = AutoReloadChange(
        enabled=data.auto_recharge_enabled,
        minimum_cents=cents(data.auto_recharge_threshold_decimillicents, NAMES.minimum),
        amount_cents=cents(data.auto_recharge_amount_decimillicents, NAMES.amount),
    )
    settings = Settings(
        billing_email=data.billing_email,
        usage_cap_cents=cents(data.usage_cap_decimillicents, "usageCapDecimillicents"),
    )
    return change, settings


def _own(org: OrgScope, named: str) -> None:
    """Document 002 names the organization in some bodies: it must be the key's (403 otherwise)."""
    if named != str(org.org_id):
        raise Forbidden(
            "organizationId is another organization than this API key's",
            code="organization_mismatch",
            field="organizationId",
        )


class OrganizationSettingsController(TenantController):
    """GET/PATCH /v1/organizations/{organizationId}/billing: the product's BillingSettings."""

    path = "/v1/organizations/{organization_id:str}/billing"
    tags = ["billing (002)"]
    opt = f002.OPT

    @get(
        "/",
        operation_id="GetOrganizationBilling",
        description=(
            "Billing settings in document 002's shape: amounts in decimillicents (1/10,000 of a cent)."
        ),
        summary="Billing settings (decimillicents)",
        responses=responses(403, 404, family="002"),
    )
    async def get_billing(
        self,
        organization_id: FromPath[str],
        org: NamedDependency[OrgScope],
        autoreload: NamedDependency[AutoReloadService],
        orgs: NamedDependency[OrgService],
    ) -> f002.BillingSettings:
        found = await orgs.get(org.org_id)
        return settings_out(await autoreload.view(org.org_id), found.suspended_at)

    @patch(
        "/",
        operation_id="UpdateOrganizationBilling",
        description=(
            "Merges the body into the billing settings: an absent key keeps its value, null clears "
            "it; the merged settings are validated as a whole."
        ),
        summary="Change billing settings: absent keeps, null clears, the merged result is validated",
        responses=responses(403, 404, 422, body=True, family="002"),
    )
    async def patch_billing(
        self,
        organization_id: FromPath[str],
        data: JSONBody[f002.BillingSettingsPatch],
        org: NamedDependency[OrgScope],
        autoreload: NamedDependency[AutoReloadService],
        orgs: NamedDependency[OrgService],
    ) -> f002.BillingSettings:
        change, settings = _change(data)
        view = await autoreload.configure(org.org_id, change, NAMES, settings)
        found = await orgs.get(org.org_id)
        return settings_out(view, found.suspended_at)


class OrganizationPaymentsController(TenantController):
    """POST /v1/billing/{organizationId}/top-up, /dev/complete-local and the auto-recharge challenge."""

    path = "/v1/billing/{organization_id:str}"
    tags = ["billing (002)"]
    opt = f002.OPT

    @post(
        "/top-up",
        operation_id="OrganizationTopUp",
        description=(
            "Creates a hosted checkout for a one-time top-up of `amountDecimillicents`; the balance "
            "is credited when the provider reports the payment (webhook), not before."
        ),
        summary="A hosted checkout for a one-time top-up; the credit arrives when it is paid",
        status_code=200,
        responses=responses(403, 404, 502, body=True, family="002"),
    )
    async def top_up(
        self,
        organization_id: FromPath[str],
        data: JSONBody[f002.HostedTopUpRequest],
        org: NamedDependency[OrgScope],
        topups: NamedDependency[TopUpService],
    ) -> f002.HostedSession:
        session = await topups.checkout(
            org.org_id,
            amount_cents=f002.to_cents(data.amount_decimillicents, "amountDecimillicents"),
            success_url=data.success_url,
            cancel_url=data.cancel_url,
            price_ids=[],
            amount_field="amountDecimillicents",
        )
        return f002.HostedSession(id=session.id, url=session.url)

    @post(
        "/dev/complete-local",
        operation_id="CompleteLocalPayment",
        description=(
            "Development payment provider only: completes a pending payment (a checkout session, a "
            "payment intent, or the latest) as if the customer had paid, so the credit arrives."
        ),
        summary="Development: complete a pending local payment (a session, an intent, or the latest)",
        status_code=200,
        responses=responses(403, 404, body=True, family="002"),
        operation_class=OptionalBody,
    )
    async def complete_local(
        self,
        organization_id: FromPath[str],
        org: NamedDependency[OrgScope],
        topups: NamedDependency[TopUpService],
        autoreload: NamedDependency[AutoReloadService],
        orgs: NamedDependency[OrgService],
        provider: NamedDependency[PaymentProvider],
        production: NamedDependency[bool],
        data: JSONBody[f002.CompleteLocalRequest] = f002.CompleteLocalRequest(),
    ) -> f002.BillingSettings:
        if production or provider.name != "local":
            raise Forbidden(
                "complete-local exists in development with the local payment provider only",
                code="development_only",
            )
        await topups.complete_local(org.org_id, data.session_id or data.payment_intent_id)
        found = await orgs.get(org.org_id)
        return settings_out(await autoreload.view(org.org_id), found.suspended_at)

    @get(
        "/auto-recharge/requires-action",
        operation_id="AutoRechargeRequiresAction",
        description=(
            "The latest auto-recharge that needs the customer (3-D Secure) and is not resolved yet, "
            "with what to show them; null when there is none."
        ),
        summary="The latest unresolved auto-recharge challenge, or null",
        responses=responses(403, 404, family="002"),
    )
    async def requires_action(
        self,
        organization_id: FromPath[str],
        org: NamedDependency[OrgScope],
        profiles: NamedDependency[ProfileService],
    ) -> f002.RequiresAction | None:
        profile = await profiles.get(org.org_id)
        action = profile.reload_action
        if not action or not action.get("payment_intent_id"):
            return None
        return f002.RequiresAction(
            attempt_id=str(action["payment_intent_id"]),
            amount_decimillicents=f002.to_decimillicents(int(action.get("amount_cents") or 0)),
            stripe_payment_intent_id=str(action["payment_intent_id"]),
            client_secret=action.get("client_secret"),
        )


class CheckoutController(TenantController):
    """POST /v1/billing/checkout and /v1/billing/portal: the organization is named in the body."""

    path = "/v1/billing"
    tags = ["billing (002)"]
    opt = f002.OPT

    @post(
        "/checkout",
        operation_id="CreateCheckoutSession",
        description=(
            "Creates a hosted checkout for a subscription plan step of billing.yaml (by its price id)."
        ),
        summary="A hosted checkout for a subscription plan of billing.yaml",
        status_code=200,
        responses=responses(403, 404, 502, body=True, family="002"),
    )
    async def checkout(
        self,
        data: JSONBody[f002.CheckoutRequest],
        org: NamedDependency[OrgScope],
        topups: NamedDependency[TopUpService],
        plans: NamedDependency[PlansConfig],
    ) -> f002.HostedSession:
        _own(org, data.organization_id)
        found = plans.paid_step(data.subscription_plan)
        if found is None:
            raise NotFound(
                f"no plan {data.subscription_plan!r} with a provider price in billing.yaml",
                code="plan_not_found",
                field="subscriptionPlan",
            )
        _ladder, step = found
        assert step.price_id is not None
        session = await topups.checkout(
            org.org_id,
            amount_cents=None,
            success_url=data.success_url,
            cancel_url=data.cancel_url,
            price_ids=[step.price_id],
            purpose="subscription",
            metadata={"plan": data.subscription_plan},
        )
        return f002.HostedSession(id=session.id, url=session.url)

    @post(
        "/portal",
        operation_id="CreatePortalSession",
        description=(
            "A link to the payment provider's billing portal, where the customer manages cards and invoices."
        ),
        summary="The provider's billing portal",
        status_code=200,
        responses=responses(403, 404, 502, body=True, family="002"),
    )
    async def portal(
        self,
        data: JSONBody[f002.PortalRequest],
        org: NamedDependency[OrgScope],
        topups: NamedDependency[TopUpService],
    ) -> f002.HostedSession:
        _own(org, data.organization_id)
        session = await topups.portal(org.org_id, data.return_url)
        return f002.HostedSession(id=session.id, url=session.url)


ROUTES_002: list[Any] = [OrganizationSettingsController, OrganizationPaymentsController, CheckoutController]
