"""The operator dashboard in a real browser: Playwright driving Debian's chromium
(``/usr/bin/chromium``; Playwright's own browser download is never used) against a live uvicorn
server on 127.0.0.1 with a temporary database. Screenshots of each page go to docs/screenshots/
(``BILLFOLD_SCREENSHOTS`` to change it)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN, ADMIN_KEY, ROOT, config_text

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("BILLFOLD_SCREENSHOTS", ROOT / "docs" / "screenshots"))

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    """Billfold served by uvicorn on 127.0.0.1 (its own process), on the test's database."""
    config = tmp_path / "billing.yaml"
    config.write_text(config_text(database_url=database_url))
    env = {
        **os.environ,
        "BILLFOLD_CONFIG": str(config),
        "BILLFOLD_DATABASE_URL": database_url,
        "BILLFOLD_ADMIN_API_KEY": ADMIN_KEY,
    }
    env.pop("BILLFOLD_PLUGINS", None)
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "billfold.api.app:create_app_from_env",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not become healthy:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            launched.close()


def _shot(page: object, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def _no_horizontal_scroll(page: object, width: int) -> None:
    scroll = page.evaluate("document.documentElement.scrollWidth")  # type: ignore[attr-defined]
    assert scroll <= width, f"{page.url}: scrollWidth {scroll} > {width}"  # type: ignore[attr-defined]


def _sign_in(page: object, url: str, key: str) -> None:
    page.goto(f"{url}/dashboard/organizations")  # type: ignore[attr-defined]
    page.fill("#key", key)  # type: ignore[attr-defined]
    # Until the answer to the form has loaded: a check run while the page is still navigating finds
    # no document (seen once in CI: document.documentElement was null).
    with page.expect_navigation():  # type: ignore[attr-defined]
        page.click("button[type=submit]")  # type: ignore[attr-defined]


def _make_org(url: str, name: str, balance: int) -> str:
    created = httpx.post(f"{url}/v1/admin/organizations", json={"name": name}, headers=ADMIN, timeout=10)
    assert created.status_code == 201, created.text
    org_id: str = created.json()["id"]
    if balance:
        adjusted = httpx.post(
            f"{url}/v1/admin/organizations/{org_id}/adjustments",
            json={"amount_cents": balance, "description": "opening balance"},
            headers=ADMIN,
            timeout=10,
        )
        assert adjusted.status_code == 201, adjusted.text
    key = created.json()["api_key"]
    usage = httpx.post(
        f"{url}/v1/usage",
        json={"event_id": f"sms-{name}", "channel": "sms", "quantity": 3},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert usage.status_code in (200, 201), usage.text
    return org_id


def test_an_operator_adjusts_a_balance_in_the_browser(server: str, browser: object) -> None:
    org_id = _make_org(server, "Acme Browser", 5000)
    _make_org(server, "Other Org", 100)
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()

    # A wrong key is refused.
    _sign_in(page, server, "not-a-key")
    assert page.locator(".error").inner_text() == "That is not an operator key."
    assert page.url.endswith("/dashboard/sign-in")
    _shot(page, "sign-in-refused")

    _sign_in(page, server, ADMIN_KEY)
    assert page.url.endswith("/dashboard/organizations")
    assert page.locator("#organizations").is_visible()

    # Find the organization.
    page.fill("#q", "acme")
    page.click("form.search button")
    rows = page.locator("#organizations tbody tr")
    assert rows.count() == 1 and "Acme Browser" in rows.first.inner_text()
    _shot(page, "organizations")
    page.click("text=Acme Browser")
    assert page.url.endswith(f"/dashboard/organizations/{org_id}")
    opening = Decimal(page.locator("#free-balance").inner_text())
    assert Decimal("49") < opening < Decimal("50")  # 50.00 less the SMS
    dot = page.locator("#free-chart circle.dot")
    assert dot.get_attribute("data-value") == str(int(opening * 100))
    assert page.locator("#usage-chart rect").count() >= 1
    _shot(page, "organization")

    # Adjust with a reason: review, then confirm.
    page.click("#action-core-adjust summary")
    page.fill("#core-adjust-amount", "25.03")
    page.fill("#core-adjust-description", "goodwill")
    page.fill("#core-adjust-reason", "support ticket 77")
    page.click("#action-core-adjust button[type=submit]")
    assert "Credit USD 25.03 to Acme Browser" in page.locator("#summary").inner_text()
    _shot(page, "confirm-adjustment")
    page.click("#confirm")
    assert page.url.endswith(f"/dashboard/organizations/{org_id}")
    assert "Adjusted by USD 25.03" in page.locator(".flash").inner_text()
    after = opening + Decimal("25.03")
    assert page.locator("#free-balance").inner_text() == str(after)
    assert page.locator("#free-chart circle.dot").get_attribute("data-value") == str(int(after * 100))
    audit = page.locator("#audit tbody tr").first.inner_text()
    assert "dashboard:bootstrap" in audit and "ledger.adjusted" in audit and "support ticket 77" in audit
    _shot(page, "organization-after-adjustment")
    page.goto(f"{server}/dashboard/organizations/{org_id}?days=90")
    assert page.locator("#free-chart polyline").count() == 1
    _shot(page, "organization-90-days")

    # An action page of its own (revoke a key), then sign out.
    page.goto(f"{server}/dashboard/organizations/{org_id}")
    page.click("#keys a.button")
    assert page.locator("h1").inner_text() == "Revoke an API key"
    _shot(page, "revoke-key")
    page.click("#sign-out")
    assert page.url.endswith("/dashboard/sign-in")
    page.goto(f"{server}/dashboard/organizations/{org_id}")
    assert "/dashboard/sign-in" in page.url
    _shot(page, "sign-in")
    context.close()


def test_a_form_without_its_csrf_token_is_refused(server: str, browser: object) -> None:
    org_id = _make_org(server, "Csrf Org", 1000)
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    _sign_in(page, server, ADMIN_KEY)
    page.goto(f"{server}/dashboard/organizations/{org_id}")
    page.click("#action-core-adjust summary")
    page.fill("#core-adjust-amount", "5")
    page.fill("#core-adjust-description", "x")
    page.fill("#core-adjust-reason", "y")
    page.evaluate("document.querySelector('#action-core-adjust input[name=_csrf_token]').remove()")
    page.click("#action-core-adjust button[type=submit]")
    assert page.locator("h1").inner_text().startswith("Refused")
    assert "security token" in page.locator(".error").inner_text()
    _shot(page, "csrf-refused")
    balance = httpx.get(f"{server}/v1/admin/organizations/{org_id}", headers=ADMIN, timeout=10)
    assert balance.status_code == 200
    context.close()


@pytest.mark.parametrize("width", [375])
def test_no_horizontal_scroll_on_a_phone(server: str, browser: object, width: int) -> None:
    org_id = _make_org(server, "A rather long organization name for a narrow phone screen", 123456)
    context = browser.new_context(viewport={"width": width, "height": 800}, device_scale_factor=1)  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(f"{server}/dashboard/sign-in")
    _no_horizontal_scroll(page, width)
    _shot(page, "phone-sign-in")
    _sign_in(page, server, ADMIN_KEY)
    _no_horizontal_scroll(page, width)
    _shot(page, "phone-organizations")
    page.goto(f"{server}/dashboard/organizations/{org_id}")
    page.click("#action-core-plan summary")
    _no_horizontal_scroll(page, width)
    _shot(page, "phone-organization")
    page.goto(f"{server}/dashboard/organizations/{org_id}/actions/adjust")
    _no_horizontal_scroll(page, width)
    assert re.search(r"Adjust the balance", page.locator("h1").inner_text())
    context.close()
