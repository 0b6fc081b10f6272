"""The alerts plugin's "Webhooks" panel on the operator dashboard, over HTTP: an organization's
endpoints and recent deliveries as the database holds them (escaped), and its actions, disable and
enable an endpoint and replay a delivery, each behind the dashboard's session, CSRF token, reason
and confirmation, leaving one audit row, and taking effect on what reaches a real receiver."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec
import pytest

from alerts_support import Receiver, alerts_config, deliver, deliver_until
from billfold.api.app import Billfold
from conftest import ADMIN, ADMIN_KEY, assert_error
from test_alerts import adjust, charge, deliveries, endpoint, levels
from test_dashboard import act, csrf, sign_in

try:  # the browser's fixtures and helpers (a live server, Debian's chromium through Playwright)
    from test_dashboard_browser import (  # noqa: F401  (browser and server are fixtures)
        CHROMIUM,
        SCREENSHOTS,
        _no_horizontal_scroll,
        _shot,
        _sign_in,
        browser,
        server,
    )
except pytest.skip.Exception:  # Playwright is not installed
    CHROMIUM = None

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


config_overrides = alerts_config


@pytest.fixture
def audit_rows(state: Billfold) -> Callable[[str], Awaitable[list[dict[str, Any]]]]:
    """An organization's audit rows, newest first, as the audit service reads them."""

    async def read(org_id: str) -> list[dict[str, Any]]:
        page = await state.audit.page(org_id=uuid.UUID(org_id), limit=200)
        rows: list[dict[str, Any]] = msgspec.to_builtins(page.items)
        return rows

    return read


async def organization_page(client: httpx.AsyncClient, org_id: str) -> str:
    page = await client.get(f"/dashboard/organizations/{org_id}")
    assert page.status_code == 200, page.text[:2000]
    return page.text


def panel(page: str) -> str:
    found = re.search(r'<section class="card panel" data-plugin="alerts">(.*?)</section>', page, re.S)
    assert found, "no alerts panel on the page"
    return found.group(1)


def text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def levels_text(page: str) -> str:
    found = re.search(r'<p id="alerts-levels">(.*?)</p>', panel(page), re.S)
    assert found, "no levels in the panel"
    return text(found.group(1))


def row_text(page: str, kind: str, row_id: str) -> str:
    """The text of an endpoint's or a delivery's row of the panel, tags removed, spaces collapsed."""
    found = re.search(rf'<tr data-{kind}="{row_id}">(.*?)</tr>', panel(page), re.S)
    assert found, f"no {kind} row {row_id}"
    return text(found.group(1))


async def endpoint_state(client: httpx.AsyncClient, tenant: Any, hook: dict[str, Any]) -> tuple[str, Any]:
    got = await client.get(f"/v1/webhooks/{hook['id']}", headers=tenant.headers)
    assert got.status_code == 200, got.text
    return got.json()["status"], got.json()["disabled_reason"]


async def test_the_panel_shows_endpoints_and_deliveries_escaped(client, state, tenant, receiver) -> None:
    await sign_in(client)
    empty = panel(await organization_page(client, tenant.org_id))
    assert "No webhook endpoint" in empty and "No delivery yet" in empty

    hostile = '<script>alert("x")</script> & co'
    created = await client.post(
        "/v1/webhooks",
        json={
            "url": receiver.url,
            "events": ["billing.balance_low", "payment.succeeded"],
            "description": hostile,
        },
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    receiver.secrets.append(hook["secret"])
    same_secret = await client.post(  # one receiver verifies both with the one secret
        "/v1/webhooks",
        json={"url": receiver.url, "events": ["*"], "secret": hook["secret"]},
        headers=tenant.headers,
    )
    assert same_secret.status_code == 201, same_secret.text
    everything = same_secret.json()
    receiver.script = [(200, {}), (503, {})]
    tested = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=tenant.headers)
    assert tested.status_code == 200 and tested.json()["status"] == "delivered", tested.text
    retried = await client.post(f"/v1/webhooks/{everything['id']}/test", headers=tenant.headers)
    assert retried.status_code == 200 and retried.json()["status"] == "pending", retried.text

    page = await organization_page(client, tenant.org_id)
    assert hostile not in page and "<script>alert" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co" in page
    shown = row_text(page, "endpoint", hook["id"])
    assert receiver.url in shown and "enabled" in shown
    assert "billing.balance_low, payment.succeeded" in shown and hostile in shown
    assert hook["created_at"][:10] in shown and "Disable" in shown
    assert "every event" in row_text(page, "endpoint", everything["id"])

    delivered = row_text(page, "delivery", tested.json()["id"])
    assert delivered.split()[2:] == ["webhook.test", receiver.url, "delivered", "1", "200", "—", "Replay"]
    pending = row_text(page, "delivery", retried.json()["id"])
    next_retry = retried.json()["next_attempt_at"][:19].replace("T", " ")
    assert pending.split()[2:] == [
        "webhook.test",
        receiver.url,
        "retrying",
        "HTTP",
        "503",
        "1",
        "503",
        *next_retry.split(),
    ]  # no Replay while it is being attempted
    assert 'class="scroll"' in panel(page)

    # The row's button opens the action's form with the delivery filled in.
    form = await client.get(
        f"/dashboard/organizations/{tenant.org_id}/panels/alerts/replay?delivery={tested.json()['id']}"
    )
    assert form.status_code == 200 and f'value="{tested.json()["id"]}"' in form.text


async def test_disable_and_enable_an_endpoint_each_with_one_audit_row(
    client, state, new_tenant, receiver, audit_rows
) -> None:
    tenant = await new_tenant(balance=1200)
    hook = await endpoint(client, tenant, receiver, ["billing.balance_low", "billing.balance_recovered"])
    await levels(client, tenant, [1000])
    await sign_in(client)
    page = await organization_page(client, tenant.org_id)
    assert levels_text(page) == (
        "Balance levels: USD 10.00 Watched: an enabled endpoint subscribes to a balance event."
    )
    link = f"/dashboard/organizations/{tenant.org_id}/panels/alerts/disable-endpoint?endpoint={hook['id']}"
    assert html.escape(link) in page
    form = await client.get(link)
    assert form.status_code == 200 and f'<option value="{hook["id"]}" selected>' in form.text
    before = await audit_rows(tenant.org_id)

    review, done = await act(
        client,
        tenant.org_id,
        "disable-endpoint",
        {"endpoint": hook["id"], "reason": "receiver answers slowly"},
        plugin="alerts",
    )
    assert review.status_code == 200 and "nothing is sent to it" in review.text
    assert done.status_code == 302, done.text[:2000]
    assert await endpoint_state(client, tenant, hook) == ("disabled", "operator")
    after = await audit_rows(tenant.org_id)
    assert len(after) == len(before) + 1
    row = after[0]
    assert (row["action"], row["actor"], row["reason"], row["target"]) == (
        "webhook_endpoint.disabled",
        "dashboard:bootstrap",
        "receiver answers slowly",
        f"webhook_endpoint:{hook['id']}",
    )
    assert (row["before"]["status"], row["after"]["status"]) == ("enabled", "disabled")
    page = await organization_page(client, tenant.org_id)
    shown = row_text(page, "endpoint", hook["id"])
    assert "disabled operator" in shown and "Enable" in shown
    assert "Not watched" in levels_text(page)

    # Disabled: a test is refused and a level crossed sends nothing.
    assert_error(await client.post(f"/v1/webhooks/{hook['id']}/test", headers=tenant.headers), 422)
    await charge(client, tenant, 300)
    await deliver(state)
    assert receiver.received == []

    # Disabling it again is no longer offered: refused, no audit row.
    again, _ = await act(
        client, tenant.org_id, "disable-endpoint", {"endpoint": hook["id"], "reason": "r"}, plugin="alerts"
    )
    assert again.status_code in (400, 404)
    assert len(await audit_rows(tenant.org_id)) == len(before) + 1

    _, enabled = await act(
        client, tenant.org_id, "enable-endpoint", {"endpoint": hook["id"], "reason": "fixed"}, plugin="alerts"
    )
    assert enabled.status_code == 302, enabled.text[:2000]
    assert await endpoint_state(client, tenant, hook) == ("enabled", None)
    rows = await audit_rows(tenant.org_id)
    assert [r["action"] for r in rows[:2]] == ["webhook_endpoint.enabled", "webhook_endpoint.disabled"]
    assert len(rows) == len(before) + 2
    # Enabled: the balance is watched again.
    await adjust(client, tenant, 500)  # 900 -> 1400
    await charge(client, tenant, 600)  # 1400 -> 800 crosses 1000
    await deliver(state)
    assert [e["event"] for e in receiver.events()] == ["billing.balance_low"]
    assert levels_text(await organization_page(client, tenant.org_id)).startswith(
        "Balance levels: USD 10.00 · fired, re-armed when the free balance is back above: USD 10.00 Watched"
    )


async def test_without_a_reason_or_the_csrf_token_nothing_changes(
    client, state, tenant, receiver, audit_rows
) -> None:
    hook = await endpoint(client, tenant, receiver)
    tested = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=tenant.headers)
    assert tested.json()["status"] == "delivered"
    await sign_in(client)
    before = await audit_rows(tenant.org_id)
    base = f"/dashboard/organizations/{tenant.org_id}/panels/alerts"
    disable = {"endpoint": hook["id"]}
    replay = {"delivery": tested.json()["id"]}

    for name, values in (("disable-endpoint", disable), ("replay", replay)):
        refused, _ = await act(client, tenant.org_id, name, {**values, "reason": "  "}, plugin="alerts")
        assert refused.status_code == 400 and "reason is required" in refused.text
        page = await client.get(f"/dashboard/organizations/{tenant.org_id}")
        skipped = await client.post(
            f"{base}/{name}", data={**values, "stage": "confirm", "_csrf_token": csrf(page)}
        )
        assert skipped.status_code == 400  # confirming with no reason
        for token in ({}, {"_csrf_token": "0" * 128}):
            forged = await client.post(
                f"{base}/{name}", data={**values, "reason": "r", "stage": "confirm", **token}
            )
            assert forged.status_code == 403 and "security token" in forged.text

    assert await endpoint_state(client, tenant, hook) == ("enabled", None)
    assert await audit_rows(tenant.org_id) == before
    (logged,) = await deliveries(client, tenant, hook)
    assert (logged["status"], logged["attempts"]) == ("delivered", 1)
    await deliver(state)
    assert len(receiver.received) == 1


async def test_replay_from_the_panel_reaches_the_receiver_again(
    client, state, new_tenant, receiver, audit_rows
) -> None:
    tenant = await new_tenant()
    other = await new_tenant(name="Other")
    hook = await endpoint(client, tenant, receiver)
    receiver.default = (500, {})
    tested = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=tenant.headers)
    delivery_id = tested.json()["id"]
    await deliver_until(state, lambda: len(receiver.received) >= 5)
    await deliver(state)
    await sign_in(client)
    page = await organization_page(client, tenant.org_id)
    shown = row_text(page, "delivery", delivery_id)
    assert shown.split()[2:] == [
        "webhook.test",
        receiver.url,
        "failed",
        "HTTP",
        "500",
        "5",
        "500",
        "—",
        "Replay",
    ]

    # Another organization's delivery is not found from this one's page.
    _, stranger = await act(
        client, other.org_id, "replay", {"delivery": delivery_id, "reason": "r"}, plugin="alerts"
    )
    assert stranger.status_code == 404 and "no such delivery" in stranger.text
    _, bad = await act(client, tenant.org_id, "replay", {"delivery": "nope", "reason": "r"}, plugin="alerts")
    assert bad.status_code == 400 and "id" in bad.text
    before = await audit_rows(tenant.org_id)

    receiver.default = (200, {})
    _, done = await act(
        client,
        tenant.org_id,
        "replay",
        {"delivery": delivery_id, "reason": "receiver fixed"},
        plugin="alerts",
    )
    assert done.status_code == 302, done.text[:2000]
    rows = await audit_rows(tenant.org_id)
    assert len(rows) == len(before) + 1
    assert (rows[0]["action"], rows[0]["target"], rows[0]["reason"]) == (
        "webhook_delivery.replayed",
        f"webhook_delivery:{delivery_id}",
        "receiver fixed",
    )
    assert (rows[0]["before"], rows[0]["after"]) == (
        {"status": "failed", "attempts": 5},
        {"status": "pending", "attempts": 0},
    )
    flash = await organization_page(client, tenant.org_id)
    assert f"Delivery {delivery_id} (webhook.test) queued again" in flash
    assert row_text(flash, "delivery", delivery_id).split()[4] == "queued"

    # While it is pending, replaying it again is refused (409) and leaves no audit row.
    _, refused = await act(
        client, tenant.org_id, "replay", {"delivery": delivery_id, "reason": "twice"}, plugin="alerts"
    )
    assert refused.status_code == 409 and "still being attempted" in refused.text
    assert len(await audit_rows(tenant.org_id)) == len(before) + 1

    await deliver_until(state, lambda: len(receiver.received) >= 6)
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert receiver.received[-1].body == receiver.received[0].body
    (again,) = await deliveries(client, tenant, hook)
    assert (again["status"], again["status_codes"][-1]) == ("delivered", 200)
    shown = row_text(await organization_page(client, tenant.org_id), "delivery", delivery_id)
    assert shown.split()[4:7] == ["delivered", "1", "200"]


# -- in a browser --------------------------------------------------------------------------------------


def _hook(
    base: str, tenant: dict[str, str], url: str, events: list[str], description: str = ""
) -> dict[str, Any]:
    created = httpx.post(
        f"{base}/v1/webhooks",
        json={"url": url, "events": events, "description": description},
        headers=tenant,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    hook: dict[str, Any] = created.json()
    return hook


@pytest.mark.skipif(
    CHROMIUM is None or not CHROMIUM.exists(), reason="Playwright or /usr/bin/chromium missing"
)
def test_the_panel_in_a_browser(server: str, browser: Any) -> None:
    """Screenshots of the organization page with its Webhooks panel (docs/screenshots/), on a
    desktop and on a 375 px phone, after an endpoint was disabled from the panel."""
    ok, failing = Receiver().start(), Receiver(default=(500, {})).start()
    try:
        created = httpx.post(
            f"{server}/v1/admin/organizations", json={"name": "Acme Webhooks"}, headers=ADMIN, timeout=10
        )
        assert created.status_code == 201, created.text
        org_id = created.json()["id"]
        tenant = {"Authorization": f"Bearer {created.json()['api_key']}"}
        main = _hook(server, tenant, ok.url, ["billing.balance_low", "billing.balance_recovered"], "alerts")
        ok.secrets.append(main["secret"])
        flaky = _hook(server, tenant, failing.url, ["*"], "the ops channel")
        failing.secrets.append(flaky["secret"])
        old = _hook(server, tenant, ok.url + "/old", ["invoice.finalized"])
        for hook in (main, main, flaky):
            tested = httpx.post(f"{server}/v1/webhooks/{hook['id']}/test", headers=tenant, timeout=30)
            assert tested.status_code == 200, tested.text

        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        _sign_in(page, server, ADMIN_KEY)
        page.goto(f"{server}/dashboard/organizations/{org_id}")
        page.click(f'#alerts-endpoints tr[data-endpoint="{old["id"]}"] a.button')
        assert page.locator("h1").inner_text() == "Disable a webhook endpoint"
        page.fill("#alerts-disable-endpoint-reason", "the receiver was retired")
        page.click("section.narrow button[type=submit]")
        assert "nothing is sent to it" in page.locator("#summary").inner_text()
        page.click("#confirm")
        assert page.url.endswith(f"/dashboard/organizations/{org_id}")
        assert "disabled" in page.locator(".flash").inner_text()
        endpoints = page.locator("#alerts-endpoints tbody tr")
        assert endpoints.count() == 3
        assert "disabled" in page.locator(f'tr[data-endpoint="{old["id"]}"]').inner_text()
        outcomes = page.locator("#alerts-deliveries tbody tr td:nth-child(4)").all_inner_texts()
        assert sorted(o.split()[0] for o in outcomes) == ["delivered", "delivered", "retrying"]
        audit = page.locator("#audit tbody tr").first.inner_text()
        assert "webhook_endpoint.disabled" in audit and "the receiver was retired" in audit
        _shot(page, "organization-webhooks")
        page.locator('section[data-plugin="alerts"]').screenshot(path=str(SCREENSHOTS / "webhooks-panel.png"))
        context.close()

        phone = browser.new_context(viewport={"width": 375, "height": 800}, device_scale_factor=1)
        small = phone.new_page()
        _sign_in(small, server, ADMIN_KEY)
        small.goto(f"{server}/dashboard/organizations/{org_id}")
        _no_horizontal_scroll(small, 375)
        small.locator('section[data-plugin="alerts"]').screenshot(
            path=str(SCREENSHOTS / "phone-webhooks-panel.png")
        )
        phone.close()
    finally:
        ok.stop()
        failing.stop()
    assert ok.failures == [] and failing.failures == [], ok.failures + failing.failures
