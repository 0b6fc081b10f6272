"""The billing account in the shapes of documents 000, 001, 002 and 004, over one service.

Enabling auto-reload needs the minimum and the amount in the same request (400 naming the field
in the caller's own spelling), valid values (400), and a payment method on file (422
payment_method_required). Disabling always works."""

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
    """How one API document spells the billing account and its PATCH."""

    name: str
    path: str
    method: str
    enabled: str
    minimum: str
    amount: str
    monthly_limit: str

    def url(self, org_id: str) -> str:
        return self.path.format(org=org_id)

    def body(
        self, *, enabled: Any = None, minimum: Any = None, amount: Any = None, limit: Any = "unset"
    ) -> dict:
        body: dict[str, Any] = {}
        if enabled is not None:
            body[self.enabled] = enabled
        if minimum is not None:
            body[self.minimum] = minimum
        if amount is not None:
            body[self.amount] = amount
        if limit != "unset":
            body[self.monthly_limit] = limit
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
        "autoRechargeThresholdCents",
        "autoRechargeAmountCents",
        "autoRechargeMonthlyLimitCents",
    ),
    Shape(
        "004",
        "/v1/billing/auto-reload",
        "PUT",
        "enabled",
        "threshold_cents",
        "amount_cents",
        "monthly_limit_cents",
    ),
]
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

    # document 002: camelCase, the same account
    assert v002["organizationId"] == tenant.org_id
    assert v002["balanceCents"] == 124000
    assert v002["reservedCents"] == 1000
    assert v002["totalCents"] == 125000
    assert v002["autoRechargeEnabled"] is False
    assert v002["autoRechargeThresholdCents"] == 1000
    assert v002["autoRechargeAmountCents"] == 5000
    assert v002["autoRechargeMonthlyLimitCents"] is None
    assert v002["hasPaymentMethod"] is False
    assert not any("_" in key for key in v002)

    # document 004's auto-reload resource
    assert v004["enabled"] is False
    assert v004["threshold_cents"] == 1000
    assert v004["amount_cents"] == 5000
    assert v004["monthly_limit_cents"] is None
    assert v004["currency"] == "usd"


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


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
async def test_enabling_without_minimum_or_amount_names_the_missing_field(client, state, tenant, shape):
    await put_payment_method_on_file(state, tenant.org_id)
    without_minimum = await send(client, tenant, shape, shape.body(enabled=True, amount=5000))
    assert_error(without_minimum, 400, field=shape.minimum)
    without_amount = await send(client, tenant, shape, shape.body(enabled=True, minimum=1000))
    assert_error(without_amount, 400, field=shape.amount)
    without_both = await send(client, tenant, shape, shape.body(enabled=True))
    body = assert_error(without_both, 400)
    assert body["error"]["field"] in (shape.minimum, shape.amount)
    assert body["error"]["field"] in body["message"]
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
    response = await send(client, tenant, shape, {field: value})
    body = assert_error(response, 400, "validation_error", field=field)
    assert field in body["message"]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
async def test_unknown_field_is_400_naming_it(client, tenant, shape):
    response = await send(client, tenant, shape, {"auto_reload_minimun_cents": 1000})
    assert_error(response, 400, "validation_error", field="auto_reload_minimun_cents")


# -- enabling: the payment method ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
async def test_enabling_without_a_payment_method_is_422(client, tenant, shape):
    response = await send(client, tenant, shape, shape.body(enabled=True, minimum=2000, amount=10000))
    body = assert_error(response, 422, "payment_method_required")
    assert body["error"].get("fix")
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
    assert answer[shape.minimum] == 2000
    assert answer[shape.amount] == 10000
    assert answer[shape.monthly_limit] == 50000

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
    assert v001["auto_reload_monthly_limit_cents"] == 50000
    assert (
        v002["autoRechargeEnabled"],
        v002["autoRechargeThresholdCents"],
        v002["autoRechargeAmountCents"],
    ) == (
        True,
        2000,
        10000,
    )
    assert v002["autoRechargeMonthlyLimitCents"] == 50000
    assert v002["hasPaymentMethod"] is True
    assert (v004["enabled"], v004["threshold_cents"], v004["amount_cents"], v004["monthly_limit_cents"]) == (
        True,
        2000,
        10000,
        50000,
    )
    assert v004["has_payment_method"] is True

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
    assert (
        await send(client, tenant, shape, shape.body(enabled=True, minimum=0, amount=1))
    ).status_code == 200
    await put_payment_method_on_file(state, tenant.org_id, None)
    response = await send(client, tenant, shape, shape.body(enabled=False))
    assert response.status_code == 200, response.text
    assert response.json()[shape.enabled] is False
    _, v001, v002, v004 = await get_all(client, tenant)
    assert v001["auto_reload_enabled"] is False
    assert v001["auto_reload_minimum_cents"] == 0  # the settings stay for the next time
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
    assert (v004["threshold_cents"], v004["amount_cents"]) == (0, 700)


async def test_empty_patch_changes_nothing(client, tenant):
    before = await get_all(client, tenant)
    for shape in SHAPES:
        response = await send(client, tenant, shape, {})
        assert response.status_code == 200, response.text
    assert await get_all(client, tenant) == before
