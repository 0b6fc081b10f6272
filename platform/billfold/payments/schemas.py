"""Wire shapes of the billing-account and payment routes, one per API document."""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType

from billfold.fields import Amount, NonNegativeAmount, ProviderId, Url
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


class TopUpIn(msgspec.Struct, forbid_unknown_fields=True):
    """Documents 000, 001 and 002: amount in minor units."""

    amount_cents: Amount
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
    """Messages per cycle (0: the step has no cap)."""
    cost_cap: float
    """SMS and call spend per cycle, major units (0: no cap)."""
    created_at: str
    updated_at: str
    anniversary_date: str
    allow_overage: bool
    name: str
    status: str
    stripe_customer_id: str | None = None
    sms_cap: float | None = None
    call_cap: float | None = None
    pending_downgrade_cost_cap: float | None = None
    pending_downgrade_messages_cap: int | None = None
    pending_downgrade_sms_cap: float | None = None
    pending_downgrade_call_cap: float | None = None
    pending_downgrade_effective_date: str | None = None
    pending_downgrade_account_type: str | None = None
    session_id: str | None = None
    url: str | None = None
