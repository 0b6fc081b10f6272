"""The operator dashboard over HTTP (the real app, the real database): sign-in with an operator key,
CSRF on every form, actions that need a reason and a confirmation and leave one audit row each,
and pages that render what the database holds."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec
import pytest

from billfold.api.app import Billfold
from conftest import ADMIN, ADMIN_KEY, minor_balance

TOKEN = re.compile(r'name="_csrf_token" value="([^"]+)"')


def csrf(page: httpx.Response) -> str:
    found = TOKEN.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str = ADMIN_KEY) -> httpx.Response:
    form = await client.get("/dashboard/sign-in")
    assert form.status_code == 200
    return await client.post("/dashboard/sign-in", data={"key": key, "_csrf_token": csrf(form)})


async def act(
    client: httpx.AsyncClient, org_id: str, action: str, values: dict[str, str], *, plugin: str | None = None
) -> tuple[httpx.Response, httpx.Response]:
    """Review then confirm an action; returns both answers."""
    path = f"/dashboard/organizations/{org_id}/" + (
        f"panels/{plugin}/{action}" if plugin else f"actions/{action}"
    )
    page = await client.get(f"/dashboard/organizations/{org_id}")
    assert page.status_code == 200, page.text[:500]
    review = await client.post(path, data={**values, "stage": "review", "_csrf_token": csrf(page)})
    if review.status_code != 200:
        return review, review
    confirmed = await client.post(path, data={**values, "stage": "confirm", "_csrf_token": csrf(review)})
    return review, confirmed


@pytest.fixture
def audit_rows(state: Billfold) -> Callable[[str], Awaitable[list[dict[str, Any]]]]:
    """An organization's audit rows, newest first, as the audit service reads them."""

    async def read(org_id: str) -> list[dict[str, Any]]:
        page = await state.audit.page(org_id=uuid.UUID(org_id), limit=200)
        rows: list[dict[str, Any]] = msgspec.to_builtins(page.items)
        return rows

    return read


async def test_a_wrong_key_is_refused_and_pages_need_a_session(client) -> None:
    refused = await sign_in(client, "not-an-operator-key")
    assert refused.status_code == 401
    assert "not an operator key" in refused.text
    assert not [
        c
        for c in refused.headers.get_list("set-cookie")
        if c.startswith("billfold_session=") and not c.startswith("billfold_session=null")
    ]
    page = await client.get("/dashboard/organizations")
    assert page.status_code == 302
    assert page.headers["location"] == "/dashboard/sign-in?next=/dashboard/organizations"
    # A tenant's API key is no operator key either.
    created = await client.post("/v1/admin/organizations", json={"name": "T"}, headers=ADMIN)
    assert (await sign_in(client, created.json()["api_key"])).status_code == 401


async def test_sign_in_sets_an_http_only_session_and_sign_out_ends_it(client) -> None:
    signed = await sign_in(client)
    assert signed.status_code == 302 and signed.headers["location"] == "/dashboard/organizations"
    cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith("billfold_session="))
    assert "HttpOnly" in cookie and "Path=/dashboard" in cookie and "SameSite=lax" in cookie
    assert ADMIN_KEY not in cookie
    page = await client.get("/dashboard/organizations")
    assert page.status_code == 200 and "Organizations" in page.text
    assert (
        page.headers["x-frame-options"] == "DENY"
        and "default-src 'self'" in page.headers["content-security-policy"]
    )
    out = await client.post("/dashboard/sign-out", data={"_csrf_token": csrf(page)})
    assert out.status_code == 302 and out.headers["location"] == "/dashboard/sign-in"
    assert (await client.get("/dashboard/organizations")).status_code == 302


async def test_a_form_without_the_csrf_token_is_refused(client, tenant, audit_rows) -> None:
    form = await client.get("/dashboard/sign-in")
    assert form.status_code == 200
    no_token = await client.post("/dashboard/sign-in", data={"key": ADMIN_KEY})
    assert no_token.status_code == 403 and "security token" in no_token.text
    assert (await client.get("/dashboard/organizations")).status_code == 302  # not signed in
    await sign_in(client)
    before = len(await audit_rows(tenant.org_id))
    path = f"/dashboard/organizations/{tenant.org_id}/actions/adjust"
    values = {"amount": "5", "description": "x", "reason": "r", "stage": "confirm"}
    assert (await client.post(path, data=values)).status_code == 403
    forged = await client.post(path, data={**values, "_csrf_token": "0" * 128})
    assert forged.status_code == 403
    assert len(await audit_rows(tenant.org_id)) == before
    assert (await minor_balance(client, tenant.headers))["free"] == 0


async def test_the_json_api_needs_no_csrf_token_and_the_dashboard_is_not_in_the_schema(client) -> None:
    created = await client.post("/v1/admin/organizations", json={"name": "No CSRF"}, headers=ADMIN)
    assert created.status_code == 201
    schema = (await client.get("/schema/openapi.json")).json()
    assert not [p for p in schema["paths"] if p.startswith("/dashboard")]
    assert (await client.get("/dashboard/static/dashboard.css")).status_code == 200


async def test_an_adjustment_needs_a_reason_and_a_confirmation_and_leaves_one_audit_row(
    client, tenant, audit_rows
) -> None:
    await sign_in(client)
    values = {"amount": "12.34", "description": "goodwill credit"}
    refused, _ = await act(client, tenant.org_id, "adjust", {**values, "reason": "  "})
    assert refused.status_code == 400 and "reason is required" in refused.text
    page = await client.get(f"/dashboard/organizations/{tenant.org_id}")
    skipped_review = await client.post(
        f"/dashboard/organizations/{tenant.org_id}/actions/adjust",
        data={**values, "stage": "confirm", "_csrf_token": csrf(page)},
    )
    assert skipped_review.status_code == 400
    assert await audit_rows(tenant.org_id) == [] or all(
        r["action"] != "ledger.adjusted" for r in await audit_rows(tenant.org_id)
    )
    assert (await minor_balance(client, tenant.headers))["free"] == 0

    review, done = await act(client, tenant.org_id, "adjust", {**values, "reason": "ticket 42"})
    assert review.status_code == 200 and "Credit USD 12.34 to Acme" in review.text
    assert done.status_code == 302 and done.headers["location"] == f"/dashboard/organizations/{tenant.org_id}"
    assert (await minor_balance(client, tenant.headers))["free"] == 1234
    (row,) = [r for r in await audit_rows(tenant.org_id) if r["action"] == "ledger.adjusted"]
    assert row["actor"] == "dashboard:bootstrap" and row["reason"] == "ticket 42"
    assert row["before"]["free_cents"] == 0 and row["after"]["free_cents"] == 1234
    assert row["tracking_id"].startswith("trk_")
    shown = await client.get(f"/dashboard/organizations/{tenant.org_id}")
    assert "Adjusted by USD 12.34" in shown.text  # the flash message, once
    assert 'id="free-balance">12.34<' in shown.text
    assert 'data-value="1234"' in shown.text  # the chart's last day
    assert "ticket 42" in shown.text and "dashboard:bootstrap" in shown.text
    assert "Adjusted by" not in (await client.get(f"/dashboard/organizations/{tenant.org_id}")).text


async def test_a_debit_beyond_the_balance_is_refused_with_no_audit_row(
    client, new_tenant, audit_rows
) -> None:
    tenant = await new_tenant(balance=500)
    await sign_in(client)
    # The review passes (it cannot know), the confirmation is refused by the ledger.
    review, done = await act(
        client, tenant.org_id, "adjust", {"amount": "-10", "description": "d", "reason": "r"}
    )
    assert review.status_code == 200 and done.status_code == 402
    assert "insufficient" in done.text.lower() or "funds" in done.text.lower()
    assert not [r for r in await audit_rows(tenant.org_id) if r["actor"].startswith("dashboard:")]
    assert (await minor_balance(client, tenant.headers))["free"] == 500
    bad, _ = await act(
        client, tenant.org_id, "adjust", {"amount": "1.234", "description": "d", "reason": "r"}
    )
    assert bad.status_code == 400 and "decimals" in bad.text


@pytest.mark.parametrize(
    ("action", "values", "audited"),
    [
        (
            "refund",
            {"amount": "1.00", "description": "bank transfer", "reference": "tr-1"},
            "ledger.refunded",
        ),
        ("status", {"status": "blocked"}, "organization.status_set"),
        ("overage", {"overage_limit": "3.00"}, "organization.overage_set"),
        ("plan", {"messages_cap": "250", "allow_overage": "no"}, "plan.changed"),
    ],
)
async def test_each_action_leaves_exactly_one_audit_row(
    client, new_tenant, action, values, audited, audit_rows
) -> None:
    tenant = await new_tenant(balance=2000)
    await sign_in(client)
    before = await audit_rows(tenant.org_id)
    review, done = await act(client, tenant.org_id, action, {**values, "reason": f"why {action}"})
    assert review.status_code == 200, review.text[:2000]
    assert done.status_code == 302, done.text[:2000]
    after = await audit_rows(tenant.org_id)
    assert len(after) == len(before) + 1
    row = after[0]
    assert (row["action"], row["actor"], row["reason"]) == (audited, "dashboard:bootstrap", f"why {action}")


async def test_revoking_a_key_from_the_dashboard(client, tenant, audit_rows) -> None:
    await sign_in(client)
    page = await client.get(f"/dashboard/organizations/{tenant.org_id}")
    (key_id,) = re.findall(r"actions/revoke-key\?key_id=([0-9a-f-]{36})", page.text)
    form = await client.get(f"/dashboard/organizations/{tenant.org_id}/actions/revoke-key?key_id={key_id}")
    assert form.status_code == 200 and key_id in form.text
    other = await client.post("/v1/admin/organizations", json={"name": "Other"}, headers=ADMIN)
    stranger, _ = await act(
        client, other.json()["id"], "revoke-key", {"key_id": key_id, "reason": "wrong org"}
    )
    confirm = await client.post(
        f"/dashboard/organizations/{other.json()['id']}/actions/revoke-key",
        data={"key_id": key_id, "reason": "wrong org", "stage": "confirm", "_csrf_token": csrf(stranger)},
    )
    assert confirm.status_code == 404
    assert (await client.get("/v1/billing/balance", headers=tenant.headers)).status_code == 200
    _, done = await act(client, tenant.org_id, "revoke-key", {"key_id": key_id, "reason": "leaked"})
    assert done.status_code == 302
    assert (await client.get("/v1/billing/balance", headers=tenant.headers)).status_code == 401
    (row,) = [r for r in await audit_rows(tenant.org_id) if r["action"] == "api_key.revoked"]
    assert row["actor"] == "dashboard:bootstrap" and row["reason"] == "leaked"


async def test_the_tiers_panel_pins_and_unpins_with_an_audit_row_each(client, tenant, audit_rows) -> None:
    await sign_in(client)
    page = await client.get(f"/dashboard/organizations/{tenant.org_id}")
    assert "Volume tiers" in page.text and 'data-plugin="tiers"' in page.text
    _, done = await act(
        client,
        tenant.org_id,
        "pin",
        {"channel": "sms", "step": "growth", "until": "", "reason": "key account"},
        plugin="tiers",
    )
    assert done.status_code == 302, done.text[:2000]
    tiers = await client.get(f"/v1/admin/organizations/{tenant.org_id}/tiers", headers=ADMIN)
    sms = next(t for t in tiers.json()["tiers"] if t["channel"] == "sms")
    assert (sms["current"], sms["qualification_source"]) == ("growth", "manual")
    rows = [r for r in await audit_rows(tenant.org_id) if r["action"].startswith("tier.")]
    assert [(r["action"], r["actor"], r["after"]["current"]) for r in rows] == [
        ("tier.pinned", "dashboard:bootstrap", "growth")
    ]
    unknown, _ = await act(
        client, tenant.org_id, "pin", {"channel": "sms", "step": "nope", "reason": "r"}, plugin="tiers"
    )
    assert unknown.status_code == 400
    _, undone = await act(client, tenant.org_id, "unpin", {"channel": "sms", "reason": "r"}, plugin="tiers")
    assert undone.status_code == 302
    again, _ = await act(client, tenant.org_id, "unpin", {"channel": "sms", "reason": "r"}, plugin="tiers")
    confirm = await client.post(
        f"/dashboard/organizations/{tenant.org_id}/panels/tiers/unpin",
        data={"channel": "sms", "reason": "r", "stage": "confirm", "_csrf_token": csrf(again)},
    )
    assert confirm.status_code == 404  # not pinned: refused, rolled back, no audit row
    actions = [r["action"] for r in await audit_rows(tenant.org_id) if r["action"].startswith("tier.")]
    assert actions == ["tier.unpinned", "tier.pinned"]


async def test_the_organizations_list_searches_sorts_and_pages(client, new_tenant) -> None:
    rich = await new_tenant(name="Rich Corp", balance=9000)
    await new_tenant(name="Poor Ltd", balance=100)
    await sign_in(client)
    found = await client.get("/dashboard/organizations", params={"q": "rich"})
    assert "Rich Corp" in found.text and "Poor Ltd" not in found.text
    by_id = await client.get("/dashboard/organizations", params={"q": rich.org_id})
    assert "Rich Corp" in by_id.text and "Poor Ltd" not in by_id.text
    ordered = await client.get("/dashboard/organizations", params={"sort": "balance", "order": "asc"})
    assert ordered.text.index("Poor Ltd") < ordered.text.index("Rich Corp")
    assert "90.00 USD" in ordered.text
    assert (await client.get("/dashboard/organizations", params={"sort": "nope"})).status_code == 400
    assert (await client.get(f"/dashboard/organizations/{uuid.uuid4()}")).status_code == 404
    assert (await client.get("/dashboard/organizations/not-a-uuid")).status_code == 404
