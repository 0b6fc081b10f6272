"""Wire shapes of the billing-account and payment routes, one per API document."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from billfold.fields import Amount, CurrencyCode, NonNegativeAmount, ProviderId, Url
from billfold.money import format_minor
from billfold.payments.autoreload import BillingView
from billfold.payments.profiles import AutoReloadChange, FieldNames


class BillingAccount(msgspec.Struct):
    """Documents 000 and 001: `balance_cents` is the spendable (free) balance."""

    balance_cents: int
    balance_usd: str
    currency: str
    auto_reload_enabled: bool
    auto_reload_minimum_cents: int
    auto_reload_amount_cents: int
    auto_reload_monthly_limit_cents: int | None
    has_payment_method: bool


class BillingAccountPatch(msgspec.Struct, forbid_unknown_fields=True):
    auto_reload_enabled: bool | UnsetType = UNSET
    auto_reload_minimum_cents: NonNegativeAmount | UnsetType = UNSET
    auto_reload_amount_cents: Amount | UnsetType = UNSET
    auto_reload_monthly_limit_cents: NonNegativeAmount | UnsetType | None = UNSET

    def change(self) -> AutoReloadChange:
        return AutoReloadChange(
            enabled=self.auto_reload_enabled,
            minimum_cents=self.auto_reload_minimum_cents,
            amount_cents=self.auto_reload_amount_cents,
            monthly_limit_cents=self.auto_reload_monthly_limit_cents,
        )


SNAKE_NAMES = FieldNames()


class OrganizationBilling(msgspec.Struct, rename="camel"):
    """Document 002: the same account in camelCase, with auto-recharge naming."""

    organization_id: uuid.UUID
    currency: str
    balance_cents: int
    reserved_cents: int
    total_cents: int
    auto_recharge_enabled: bool
    auto_recharge_threshold_cents: int
    auto_recharge_amount_cents: int
    auto_recharge_monthly_limit_cents: int | None
    auto_recharge_paused: bool
    auto_recharge_requires_action: bool
    has_payment_method: bool


class OrganizationBillingPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    auto_recharge_enabled: bool | UnsetType = UNSET
    auto_recharge_threshold_cents: NonNegativeAmount | UnsetType = UNSET
    auto_recharge_amount_cents: Amount | UnsetType = UNSET
    auto_recharge_monthly_limit_cents: NonNegativeAmount | UnsetType | None = UNSET

    def change(self) -> AutoReloadChange:
        return AutoReloadChange(
            enabled=self.auto_recharge_enabled,
            minimum_cents=self.auto_recharge_threshold_cents,
            amount_cents=self.auto_recharge_amount_cents,
            monthly_limit_cents=self.auto_recharge_monthly_limit_cents,
        )


CAMEL_NAMES = FieldNames(
    enabled="autoRechargeEnabled",
    minimum="autoRechargeThresholdCents",
    amount="autoRechargeAmountCents",
    monthly_limit="autoRechargeMonthlyLimitCents",
)


class AutoReload(msgspec.Struct):
    """Document 004's auto-reload settings (minor units)."""

    enabled: bool
    threshold_cents: int
    amount_cents: int
    monthly_limit_cents: int | None
    currency: str
    has_payment_method: bool
    paused: bool
    consecutive_failures: int


class AutoReloadPut(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool | UnsetType = UNSET
    threshold_cents: NonNegativeAmount | UnsetType = UNSET
    amount_cents: Amount | UnsetType = UNSET
    monthly_limit_cents: NonNegativeAmount | UnsetType | None = UNSET

    def change(self) -> AutoReloadChange:
        return AutoReloadChange(
            enabled=self.enabled,
            minimum_cents=self.threshold_cents,
            amount_cents=self.amount_cents,
            monthly_limit_cents=self.monthly_limit_cents,
        )


AUTO_RELOAD_NAMES = FieldNames(
    enabled="enabled", minimum="threshold_cents", amount="amount_cents", monthly_limit="monthly_limit_cents"
)


def to_billing_account(view: BillingView, minor_units: int) -> BillingAccount:
    profile, account = view.profile, view.account
    return BillingAccount(
        balance_cents=account.free_cents,
        balance_usd=format_minor(account.free_cents, minor_units),
        currency=account.currency,
        auto_reload_enabled=profile.auto_reload_enabled,
        auto_reload_minimum_cents=profile.auto_reload_minimum_cents,
        auto_reload_amount_cents=profile.auto_reload_amount_cents,
        auto_reload_monthly_limit_cents=profile.auto_reload_monthly_limit_cents,
        has_payment_method=profile.has_payment_method,
    )


def to_organization_billing(view: BillingView) -> OrganizationBilling:
    profile, account = view.profile, view.account
    return OrganizationBilling(
        organization_id=account.org_id,
        currency=account.currency,
        balance_cents=account.free_cents,
        reserved_cents=account.reserved_cents,
        total_cents=account.total_cents,
        auto_recharge_enabled=profile.auto_reload_enabled,
        auto_recharge_threshold_cents=profile.auto_reload_minimum_cents,
        auto_recharge_amount_cents=profile.auto_reload_amount_cents,
        auto_recharge_monthly_limit_cents=profile.auto_reload_monthly_limit_cents,
        auto_recharge_paused=profile.reload_paused,
        auto_recharge_requires_action=profile.reload_action is not None,
        has_payment_method=profile.has_payment_method,
    )


def to_auto_reload(view: BillingView) -> AutoReload:
    profile = view.profile
    return AutoReload(
        enabled=profile.auto_reload_enabled,
        threshold_cents=profile.auto_reload_minimum_cents,
        amount_cents=profile.auto_reload_amount_cents,
        monthly_limit_cents=profile.auto_reload_monthly_limit_cents,
        currency=view.account.currency,
        has_payment_method=profile.has_payment_method,
        paused=profile.reload_paused,
        consecutive_failures=profile.reload_failures,
    )


class TopUpIn(msgspec.Struct, forbid_unknown_fields=True):
    """Documents 000, 001 and 002: amount in minor units."""

    amount_cents: Amount
    payment_method_id: ProviderId | None = None


MajorAmount = Annotated[
    Decimal,
    msgspec.Meta(
        description="Major units as a JSON number (10.5 = €10.50): no exponent, "
        "at most the currency's decimals."
    ),
]


class MajorTopUpIn(msgspec.Struct, forbid_unknown_fields=True):
    """Document 004: amount in major units (10 = €10.00), the currency, a stored method."""

    amount: MajorAmount
    currency: CurrencyCode | None = None
    payment_method_id: ProviderId | None = None


class TopUpOut(msgspec.Struct):
    payment_intent_id: str
    status: str
    client_secret: str | None
    amount_cents: int
    currency: str
    credited: bool


class SetupIntentOut(msgspec.Struct):
    setup_intent_id: str
    client_secret: str | None
    status: str


class DefaultMethodIn(msgspec.Struct, forbid_unknown_fields=True):
    payment_method_id: ProviderId


class PaymentMethodIn(msgspec.Struct, forbid_unknown_fields=True):
    payment_method_id: ProviderId
    make_default: bool = False


class PaymentMethodOut(msgspec.Struct):
    id: str
    type: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    is_default: bool
    status: str = "ready"


class PaymentMethodList(msgspec.Struct):
    data: list[PaymentMethodOut]
    default_payment_method_id: str | None


class CheckoutIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    success_url: Url
    cancel_url: Url
    amount_cents: Amount | None = None
    price_ids: Annotated[list[ProviderId], msgspec.Meta(max_length=20)] = []


class PortalIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    return_url: Url


class SessionOut(msgspec.Struct, rename="camel"):
    session_id: str
    url: str


class CompleteLocalIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    payment_intent_id: ProviderId | None = None


class CompleteLocalOut(msgspec.Struct, rename="camel"):
    payment_intent_id: str
    status: str
    amount_cents: int
    balance_cents: int


class RequiresActionOut(msgspec.Struct, rename="camel"):
    requires_action: bool
    paused: bool
    consecutive_failures: int
    action: dict[str, object] | None


class CustomerBillingIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Document 003: POST /billing."""

    success_url: Url
    cancel_url: Url
    message_price_id: ProviderId | None = None
    budget_price_id: ProviderId | None = None


class CustomerBillingOut(msgspec.Struct, rename="camel", omit_defaults=True):
    organization_id: str
    organization_type: str
    creator: str
    messages_cap: int
    cost_cap: int
    created_at: str
    updated_at: str
    anniversary_date: str
    allow_overage: bool
    name: str
    status: str
    stripe_customer_id: str | None = None
    sms_cap: int | None = None
    call_cap: int | None = None
    session_id: str | None = None
    url: str | None = None
