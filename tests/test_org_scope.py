"""One organization can never act on another's: a walk of the app's whole route table.

For every tenant route whose path names an organization (``org_id``, ``organization_id``) or a
resource (a hold, a key, ...), another organization's key is refused — 403 when the path names the
organization, 404 when it names a resource — and nothing in the database changes. A route added
later is covered without a test of its own: a path parameter this test does not know fails it
until a resource of that kind is added to ``RESOURCES`` below."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from sqlalchemy import select

from billfold import clock
from billfold.api.app import create_app
from billfold.api.auth import ORG_PATH_PARAMETERS, authenticate_tenant, operator_guard, tenant_guard
from billfold.db import metadata
from conftest import ADMIN, assert_error

BODIES: dict[str, Any] = {
    "/v1/orgs/{org_id:str}/billing/top-up": {"amount_cents": 1000},
    "/v1/billing/{organization_id:str}/top-up": {"amount_cents": 1000},
    "/v1/orgs/{org_id:str}/billing": {"auto_reload_enabled": False},
    "/v1/organizations/{organization_id:str}/billing": {"autoRechargeEnabled": False},
    "/v1/usage/{usage_id:uuid}/settle": {"outcome": "failed"},
    "/v1/webhooks/{webhook_id:str}": {"status": "enabled"},
    "/v1/webhooks/{webhook_id:str}/rotate-secret": {"grace_seconds": 0},
}
"""A valid body for routes that need one (a guard answers before the body is read, but a valid
body makes sure the refusal is about the organization)."""


async def _invoice(state: Any, owner: Any) -> str:
    """The owner's invoice of this month: the month is closed a month later (business time)."""
    now = clock.now()
    clock.set_offset(clock.offset() + datetime.timedelta(days=32))
    await state.month_close.close(f"{now.year:04d}-{now.month:02d}", org_id=uuid.UUID(owner.org_id))
    page, _ = await state.invoices.list(org_id=uuid.UUID(owner.org_id), limit=1)
    return str(page[0].id)


async def _resources(client: Any, owner: Any, state: Any) -> dict[str, str]:
    """One resource of each kind a path can name, belonging to ``owner``."""
    hold = await client.post("/v1/billing/holds", json={"amount_cents": 100}, headers=owner.headers)
    assert hold.status_code == 201, hold.text
    key = await client.post(
        f"/v1/admin/organizations/{owner.org_id}/keys", json={"name": "spare"}, headers=ADMIN
    )
    assert key.status_code == 201, key.text
    usage = await client.post(
        "/v1/usage",
        json={"channel": "call", "quantity": 60, "event_id": f"scope-{uuid.uuid4()}", "reserve": True},
        headers=owner.headers,
    )
    assert usage.status_code == 201, usage.text
    hook = await client.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/hooks", "events": ["*"]}, headers=owner.headers
    )
    assert hook.status_code == 201, hook.text
    delivery = await client.post(f"/v1/webhooks/{hook.json()['id']}/test", headers=owner.headers)
    assert delivery.status_code in (200, 201), delivery.text
    return {
        "webhook_id": hook.json()["id"],
        "delivery_id": delivery.json()["id"],
        "hold_id": hold.json()["hold"]["id"],
        "key_id": key.json()["id"],
        "usage_id": usage.json()["usage_id"],
        "invoice_id": await _invoice(state, owner),
    }


async def _snapshot(state: Any) -> dict[str, list[tuple[Any, ...]]]:
    async with state.engine.connect() as conn:
        return {
            table.name: sorted(tuple(map(str, row)) for row in (await conn.execute(select(table))).all())
            for table in metadata.sorted_tables
        }


def _tenant_routes(state: Any) -> list[tuple[str, str, Any]]:
    found = []
    for route in create_app(state).routes:
        for method, (handler, _model) in getattr(route, "route_handler_map", {}).items():
            if method in ("OPTIONS", "HEAD"):
                continue
            guards = [getattr(g, "func", g) for g in handler.resolve_guards()]
            if operator_guard in guards:
                continue  # operator routes act on any organization by design
            before = handler.resolve_before_request()
            tenant = (
                tenant_guard in guards
                or getattr(before, "func", before) is authenticate_tenant
                or "org" in handler.parsed_fn_signature.parameters
            )
            if not tenant or not route.path_parameters:
                continue  # public routes (health, docs, provider webhooks) name no organization
            found.append((method, route.path, route))
    return found


async def test_another_organizations_key_is_refused_on_every_route_and_changes_nothing(
    client, state, new_tenant
):
    owner = await new_tenant(balance=5000, name="Owner")
    stranger = await new_tenant(balance=5000, name="Stranger")
    resources = await _resources(client, owner, state)
    routes = _tenant_routes(state)
    assert len(routes) >= 15, routes  # the walk sees the documents' organization routes and more

    checked = []
    for method, _path, route in routes:
        names = list(route.path_parameters)
        path = route.path
        org_named = any(name in ORG_PATH_PARAMETERS for name in names)
        for name in names:
            if name in ORG_PATH_PARAMETERS:
                value = owner.org_id
            else:
                assert name in resources, f"{method} {path}: no resource of kind {name!r} to try (add one)"
                value = resources[name]
            path = path.replace("{" + name + ":str}", value).replace("{" + name + ":uuid}", value)
        before = await _snapshot(state)
        response = await client.request(
            method,
            path,
            json=BODIES.get(route.path) if method in ("POST", "PATCH", "PUT") else None,
            headers=stranger.headers,
        )
        expected = 403 if org_named else 404
        assert_error(response, expected)
        assert await _snapshot(state) == before, f"{method} {path} changed the database"
        checked.append(f"{method} {route.path}")

    assert any("/v1/billing/holds/{hold_id:uuid}" in c for c in checked)
    assert any("/v1/usage/{usage_id:uuid}/settle" in c for c in checked)
    assert any("{organization_id:str}" in c for c in checked)
    assert any("{org_id:str}" in c for c in checked)


async def test_the_owner_reaches_the_same_resources(client, new_tenant, state):
    """The refusals above are about the organization: the owner's own requests succeed."""
    owner = await new_tenant(balance=5000)
    resources = await _resources(client, owner, state)
    hold = await client.get(f"/v1/billing/holds/{resources['hold_id']}", headers=owner.headers)
    assert hold.status_code == 200, hold.text
    billing = await client.get(f"/v1/organizations/{owner.org_id}/billing", headers=owner.headers)
    assert billing.status_code == 200, billing.text
    revoked = await client.post(f"/v1/api-keys/{resources['key_id']}/revoke", headers=owner.headers)
    assert revoked.status_code == 200, revoked.text
    invoice = await client.get(f"/v1/billing/invoices/{resources['invoice_id']}/pdf", headers=owner.headers)
    assert invoice.status_code == 200, invoice.text
    unknown = await client.get(f"/v1/billing/holds/{uuid.uuid4()}", headers=owner.headers)
    assert_error(unknown, 404, "hold_not_found")
