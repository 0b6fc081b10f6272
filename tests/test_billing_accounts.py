"""The billing account in the shapes of documents 000, 001, 002 and 004, over one service.

Each document speaks its own units: 000 and 001 cents, 002 decimillicents (1 cent = 100,000), 004
major units. Enabling auto-reload needs the minimum and the amount in the same request (000, 001,
004) or in the merged settings, where a threshold of 0 is refused (002); valid values (400 naming
the field in the caller's own spelling), and a payment method on file (422
payment_method_required; 400 in 002, whose product has no 422). Disabling always works."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import update

from billfold.payments.models import BillingProfile
from conftest import assert_error


async def put_payment_method_on_file(state, org_id: str, method_id: str | None = "pm_test_4242") -> None:
    """Test set-up only: a card on file, as if setup-intent + default-payment-method had run."""
    profiles = BillingProfile.__table__
    async with state.engine.begin() as conn:
        await conn.execute(
            update(profiles)
            .where(profiles.c.org_id == uuid.UUID(org_id))
            .values(default_payment_method_id=method_id)
        )


@dataclass(frozen=True)
class Shape:
    """How one API document spells the billing account and its PATCH, and its unit."""

    name: str
    path: str
    method: str
    enabled: str
    minimum: str
    amount: str
    monthly_limit: str | None
    scale: float = 1
    """One cent in the document's unit."""
    together: bool = True
    """Enabling needs the minimum and the amount in the same request."""

    def url(self, org_id: str) -> str:
        return self.path.format(org=org_id)

    def money(self, cents: Any) -> Any:
        if not isinstance(cents, int) or isinstance(cents, bool):
            return cents
        value = cents * self.scale
        return int(value) if self.scale >= 1 else round(value, 2)

    def body(
        self, *, enabled: Any = None, minimum: Any = None, amount: Any = None, limit: Any = "unset"
    ) -> dict:
        body: dict[str, Any] = {}
        if enabled is not None:
            body[self.enabled] = enabled
        if minimum is not None:
            body[self.minimum] = self.money(minimum)
        if amount is not None:
            body[self.amount] = self.money(amount)
        if limit != "unset" and self.monthly_limit is not None:
            body[self.monthly_limit] = self.money(limit)
        return body


SHAPES = [
    Shape(
        "000",
        "/v1/orgs/{org}/billing",
        "PATCH",
        "auto_reload_enabled",
        "auto_reload_minimum_cents",
        "auto_reload_amount_cents",
        "auto_reload_monthly_limit_cents",
    ),
    Shape(
        "001",
        "/v1/billing",
        "PATCH",
        "auto_reload_enabled",
        "auto_reload_minimum_cents",
        "auto_reload_amount_cents",
        "auto_reload_monthly_limit_cents",
    ),
    Shape(
        "002",
        "/v1/organizations/{org}/billing",
        "PATCH",
        "autoRechargeEnabled",
        "autoRechargeThresholdDecimillicents",
        "autoRechargeAmountDecimillicents",
        None,
        scale=100_000,
        together=False,
    ),
    Shape(
        "004",
        "/v1/billing/auto-reload",
        "PUT",
        "enabled",
        "trigger_threshold",
        "reload_amount",
        "monthly_limit",
        scale=0.01,
    ),
]
TOGETHER = [s for s in SHAPES if s.together]
SHAPE_IDS = [s.name for s in SHAPES]


async def send(client, tenant, shape: Shape, body: dict):
    return await client.request(shape.method, shape.url(tenant.org_id), json=body, headers=tenant.headers)


async def get_all(client, tenant) -> tuple[dict, dict, dict, dict]:
    responses = [
        await client.get(f"/v1/orgs/{tenant.org_id}/billing", headers=tenant.headers),
        await client.get("/v1/billing", headers=tenant.headers),
        await client.get(f"/v1/organizations/{tenant.org_id}/billing", headers=tenant.headers),
        await client.get("/v1/billing/auto-reload", headers=tenant.headers),
    ]
    for response in responses:
        assert response.status_code == 200, response.text
    a, b, c, d = (r.json() for r in responses)
    return a, b, c, d


# -- reading ---------------------------------------------------------------------------------------------


async def test_the_three_get_shapes_show_the_same_account(client, new_tenant):
    tenant = await new_tenant(balance=125000)
    hold = await client.post("/v1/billing/holds", json={"amount_cents": 1000}, headers=tenant.headers)
    assert hold.status_code == 201
    v000, v001, v002, v004 = await get_all(client, tenant)

    # documents 000 and 001: snake_case, balance_usd formatted, exactly the documented fields
    assert v000 == v001
    assert set(v001) == {
        "balance_cents",
        "balance_usd",
        "currency",
        "auto_reload_enabled",
        "auto_reload_minimum_cents",
        "auto_reload_amount_cents",
        "auto_reload_monthly_limit_cents",
        "has_payment_method",
    }
    assert v001["balance_cents"] == 124000  # the spendable (free) balance
    assert v001["balance_usd"] == "1240.00"
    assert v001["currency"] == "usd"
    assert v001["auto_reload_enabled"] is False
    # the operator's defaults from billing.yaml
    assert v001["auto_reload_minimum_cents"] == 1000
    assert v001["auto_reload_amount_cents"] == 5000
    assert v001["auto_reload_monthly_limit_cents"] is None
    assert v001["has_payment_method"] is False

    # document 002: the product's BillingSettings, in decimillicents, null where Billfold has no fact
    assert set(v002) == {
        "organizationId",
        "billingEmail",
        "stripeCustomerId",
        "stripeSubscriptionId",
        "stripePaymentMethodId",
        "stripeMeteredSubscriptionItemId",
        "creditsBalanceDecimillicents",
        "reservedCreditsDecimillicents",
        "autoRechargeEnabled",
        "autoRechargeThresholdDecimillicents",
        "autoRechargeAmountDecimillicents",
        "usageCapDecimillicents",
        "isSubscribed",
        "subscriptionStatus",
        "subscriptionPlan",
        "subscriptionStartedAt",
        "subscriptionEndsAt",
        "subscriptionCurrentPeriodEnd",
        "suspendedAt",
        "paymentGracePeriodEndsAt",
    }
    assert v002["organizationId"] == tenant.org_id
    assert v002["creditsBalanceDecimillicents"] == 125000 * 100_000
    assert v002["reservedCreditsDecimillicents"] == 1000 * 100_000
    assert v002["autoRechargeEnabled"] is False
    assert v002["autoRechargeThresholdDecimillicents"] == 1000 * 100_000
    assert v002["autoRechargeAmountDecimillicents"] == 5000 * 100_000
    assert v002["usageCapDecimillicents"] is None
    assert v002["stripePaymentMethodId"] is None
    assert v002["isSubscribed"] is False

    # document 004's auto-reload resource: major units, the currency upper-case
    assert v004 == {
        "enabled": False,
        "trigger_threshold": 10.0,
        "reload_amount": 50.0,
        "monthly_limit": None,
        "currency": "USD",
    }


async def test_balance_usd_formats_small_and_negative_amounts(client, new_tenant):
    from conftest import ADMIN

    tenant = await new_tenant(balance=7)
    assert (await client.get("/v1/billing", headers=tenant.headers)).json()["balance_usd"] == "0.07"
    await client.put(
        f"/v1/admin/organizations/{tenant.org_id}/overage", json={"overage_limit_cents": 100}, headers=ADMIN
    )
    assert (
        await client.post("/v1/billing/charges", json={"amount_cents": 23}, headers=tenant.headers)
    ).status_code == 201
    account = (await client.get("/v1/billing", headers=tenant.headers)).json()
    assert account["balance_cents"] == -16
    assert account["balance_usd"] == "-0.16"


# -- enabling: validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", TOGETHER, ids=[s.name for s in TOGETHER])
async def test_enabling_without_minimum_or_amount_names_the_missing_field(client, state, tenant, shape):
    await put_payment_method_on_file(state, tenant.org_id)
    without_minimum = await send(client, tenant, shape, shape.body(enabled=True, amount=5000))
    assert_error(without_minimum, 400, field=shape.minimum)
    without_amount = await send(client, tenant, shape, shape.body(enabled=True, minimum=1000))
    assert_error(without_amount, 400, field=shape.amount)
    without_both = await send(client, tenant, shape, shape.body(enabled=True))
    body = assert_error(without_both, 400)
    field = body["error"]["field"] if isinstance(body["error"], dict) else body["details"][0]["field"]
    assert field in (shape.minimum, shape.amount)
    assert field in body["message"]
    v000, *_ = await get_all(client, tenant)
    assert v000["auto_reload_enabled"] is False


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize(
    ("values", "field_of"),
    [
        ({"minimum": 1000, "amount": 0}, "amount"),
        ({"minimum": 1000, "amount": -100}, "amount"),
        ({"minimum": -1, "amount": 5000}, "minimum"),
        ({"minimum": 1000, "amount": 5000, "limit": -5}, "monthly_limit"),
    ],
    ids=["amount-0", "amount-negative", "minimum--1", "monthly-limit--5"],
)
async def test_out_of_range_values_are_400_naming_the_field(client, state, tenant, shape, values, field_of):
    if getattr(shape, field_of) is None:
        pytest.skip(f"document {shape.name} has no such field")
    await put_payment_method_on_file(state, tenant.org_id)
    for enabled in (True, None):  # with or without enabling in the same request
        response = await send(client, tenant, shape, shape.body(enabled=enabled, **values))
        assert_error(response, 400, field=getattr(shape, field_of))
    v000, *_ = await get_all(client, tenant)
    assert v000["auto_reload_enabled"] is False
    assert v000["auto_reload_minimum_cents"] == 1000
    assert v000["auto_reload_amount_cents"] == 5000
    assert v000["auto_reload_monthly_limit_cents"] is None


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize(
    ("field_of", "value"),
    [
        ("amount", "5k"),
        ("amount", [5000]),
        ("minimum", 10.5),
        ("minimum", {"cents": 1}),
        ("enabled", "yes"),
        ("monthly_limit", "lots"),
        ("amount", None),
    ],
    ids=[
        "amount-str",
        "amount-list",
        "minimum-float",
        "minimum-object",
        "enabled-str",
        "limit-str",
        "amount-null",
    ],
)
async def test_wrong_type_is_400_naming_the_field(client, tenant, shape, field_of, value):
    field = getattr(shape, field_of)
    if field is None:
        pytest.skip(f"document {shape.name} has no such field")
    if shape.name == "004" and value == 10.5:
        value = 10.555  # major units: 10.5 is a valid amount; more decimals than the currency's is not
    if shape.name == "002" and value is None:
        pytest.skip("document 002: null clears the value")
    response = await send(client, tenant, shape, {field: value})
    body = assert_error(response, 400, None if shape.name == "002" else "validation_error", field=field)
    assert field in body["message"]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
async def test_unknown_field_is_400_naming_it(client, tenant, shape):
    response = await send(client, tenant, shape, {"auto_reload_minimun_cents": 1000})
    code = None if shape.name == "002" else "validation_error"
    assert_error(response, 400, code, field="auto_reload_minimun_cents")


# -- enabling: the payment method ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
async def test_enabling_without_a_payment_method_is_422(client, tenant, shape):
    response = await send(client, tenant, shape, shape.body(enabled=True, minimum=2000, amount=10000))
    if shape.name == "002":
        assert_error(response, 400)  # the product's BadRequest: it has no 422
    else:
        body = assert_error(response, 422, "payment_method_required")
        fix = body["error"].get("fix") if isinstance(body["error"], dict) else body["details"][0]["fix"]
        assert fix
    _, v001, v002, v004 = await get_all(client, tenant)
    assert v001["auto_reload_enabled"] is False
    assert v001["auto_reload_minimum_cents"] == 1000  # nothing of the refused request was kept
    assert v002["autoRechargeEnabled"] is False
    assert v004["enabled"] is False


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
async def test_enabling_with_a_payment_method_updates_every_shape(client, state, tenant, shape):
    await put_payment_method_on_file(state, tenant.org_id)
    response = await send(
        client, tenant, shape, shape.body(enabled=True, minimum=2000, amount=10000, limit=50000)
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer[shape.enabled] is True
    assert answer[shape.minimum] == shape.money(2000)
    assert answer[shape.amount] == shape.money(10000)
    if shape.monthly_limit is not None:
        assert answer[shape.monthly_limit] == shape.money(50000)

    v000, v001, v002, v004 = await get_all(client, tenant)
    assert v000 == v001
    assert v001["has_payment_method"] is True
    assert (
        v001["auto_reload_enabled"],
        v001["auto_reload_minimum_cents"],
        v001["auto_reload_amount_cents"],
    ) == (
        True,
        2000,
        10000,
    )
    assert v001["auto_reload_monthly_limit_cents"] == (None if shape.monthly_limit is None else 50000)
    assert (
        v002["autoRechargeEnabled"],
        v002["autoRechargeThresholdDecimillicents"],
        v002["autoRechargeAmountDecimillicents"],
    ) == (True, 2000 * 100_000, 10000 * 100_000)
    assert v002["stripePaymentMethodId"] == "pm_test_4242"
    assert (v004["enabled"], v004["trigger_threshold"], v004["reload_amount"]) == (True, 20.0, 100.0)
    assert v004["monthly_limit"] == (None if shape.monthly_limit is None else 500.0)

    if shape.monthly_limit is not None:
        # a null monthly limit means no cap again
        cleared = await send(client, tenant, shape, shape.body(limit=None))
        assert cleared.status_code == 200, cleared.text
        assert cleared.json()[shape.monthly_limit] is None
        assert (await get_all(client, tenant))[1]["auto_reload_monthly_limit_cents"] is None


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
async def test_disabling_always_works(client, state, tenant, shape):
    # with no payment method and nothing else in the body
    response = await send(client, tenant, shape, shape.body(enabled=False))
    assert response.status_code == 200, response.text
    assert response.json()[shape.enabled] is False

    # and after it was enabled, even once the card is gone
    await put_payment_method_on_file(state, tenant.org_id)
    minimum = 1 if shape.name == "002" else 0  # document 002 refuses a threshold of 0 while enabled
    assert (
        await send(client, tenant, shape, shape.body(enabled=True, minimum=minimum, amount=1))
    ).status_code == 200
    await put_payment_method_on_file(state, tenant.org_id, None)
    response = await send(client, tenant, shape, shape.body(enabled=False))
    assert response.status_code == 200, response.text
    assert response.json()[shape.enabled] is False
    _, v001, v002, v004 = await get_all(client, tenant)
    assert v001["auto_reload_enabled"] is False
    assert v001["auto_reload_minimum_cents"] == minimum  # the settings stay for the next time
    assert v001["auto_reload_amount_cents"] == 1
    assert v002["autoRechargeEnabled"] is False
    assert v004["enabled"] is False


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
async def test_settings_can_change_without_enabling(client, tenant, shape):
    response = await send(client, tenant, shape, shape.body(minimum=0, amount=700))
    assert response.status_code == 200, response.text
    _, v001, _, v004 = await get_all(client, tenant)
    assert v001["auto_reload_enabled"] is False
    assert (v001["auto_reload_minimum_cents"], v001["auto_reload_amount_cents"]) == (0, 700)
    assert (v004["trigger_threshold"], v004["reload_amount"]) == (0.0, 7.0)


async def test_empty_patch_changes_nothing(client, tenant):
    before = await get_all(client, tenant)
    for shape in SHAPES:
        response = await send(client, tenant, shape, {})
        assert response.status_code == 200, response.text
    assert await get_all(client, tenant) == before


# -- document 002: merged settings, null clears, its other settings ------------------------------------


async def test_002_validates_the_merged_settings(client, state, tenant):
    url = f"/v1/organizations/{tenant.org_id}/billing"
    await put_payment_method_on_file(state, tenant.org_id)
    # the stored threshold and amount (the operator's defaults) complete a bare enable
    enabled = await client.patch(url, json={"autoRechargeEnabled": True}, headers=tenant.headers)
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["autoRechargeThresholdDecimillicents"] == 1000 * 100_000
    # a threshold of 0 is refused while enabled, allowed while disabled
    zero = await client.patch(url, json={"autoRechargeThresholdDecimillicents": 0}, headers=tenant.headers)
    assert_error(zero, 400, field="autoRechargeThresholdDecimillicents")
    off = await client.patch(
        url,
        json={"autoRechargeEnabled": False, "autoRechargeThresholdDecimillicents": 0},
        headers=tenant.headers,
    )
    assert off.status_code == 200, off.text
    assert off.json()["autoRechargeThresholdDecimillicents"] == 0
    again = await client.patch(url, json={"autoRechargeEnabled": True}, headers=tenant.headers)
    assert_error(again, 400, field="autoRechargeThresholdDecimillicents")


async def test_002_null_clears_and_the_other_settings_are_kept(client, tenant):
    url = f"/v1/organizations/{tenant.org_id}/billing"
    changed = await client.patch(
        url,
        json={
            "billingEmail": "billing@acme.example",
            "usageCapDecimillicents": 2500 * 100_000,
            "autoRechargeAmountDecimillicents": 700 * 100_000,
        },
        headers=tenant.headers,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["billingEmail"], body["usageCapDecimillicents"]) == ("billing@acme.example", 2500 * 100_000)
    assert body["autoRechargeAmountDecimillicents"] == 700 * 100_000
    kept = (await client.patch(url, json={}, headers=tenant.headers)).json()
    assert kept == body  # absent keeps
    cleared = (
        await client.patch(
            url,
            json={
                "billingEmail": None,
                "usageCapDecimillicents": None,
                "autoRechargeAmountDecimillicents": None,
            },
            headers=tenant.headers,
        )
    ).json()
    assert (cleared["billingEmail"], cleared["usageCapDecimillicents"]) == (None, None)
    assert cleared["autoRechargeAmountDecimillicents"] == 5000 * 100_000  # back to the operator's default


async def test_002_amounts_must_be_whole_cents(client, tenant):
    url = f"/v1/organizations/{tenant.org_id}/billing"
    for field in ("usageCapDecimillicents", "autoRechargeAmountDecimillicents"):
        response = await client.patch(url, json={field: 150_000}, headers=tenant.headers)  # 1.5 cents
        body = assert_error(response, 400, field=field)
        assert body["_tag"] == "HttpApiDecodeError"
    bad_email = await client.patch(url, json={"billingEmail": "not an email"}, headers=tenant.headers)
    assert_error(bad_email, 400, field="billingEmail")
