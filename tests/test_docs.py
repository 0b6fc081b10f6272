"""The API documentation: every operation documented (summary, description; examples on the money
writes, pagination and errors), and pages that load nothing from another host."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from billfold.api import docs
from conftest import open_client

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MONEY_WRITES = {
    "CreateCharge": 201,
    "CreateHold": 201,
    "CaptureHold": 200,
    "AdminAdjust": 201,
    "AdminRefund": None,
    "TopUp": None,
    "OrgTopUp": None,
    "ReportUsage": None,
}
"""Operation id: the success status whose answer has examples too (None: the request only)."""
PAGINATED = ("ListTransactions",)
DOC_PAGES = ("/schema/swagger", "/schema/redoc", "/schema/elements", "/schema/rapidoc", "/schema/scalar")


def operations(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                operation = item[method]
                found[operation.get("operationId") or f"{method.upper()} {path}"] = operation
    return found


async def test_every_operation_has_a_summary_and_a_description(client) -> None:
    """Every route, the plugins' included: a route added later needs both too."""
    schema = (await client.get("/schema/openapi.json")).json()
    missing = [
        f"{name}: {field}"
        for name, operation in operations(schema).items()
        for field in ("summary", "description")
        if not str(operation.get(field) or "").strip()
    ]
    assert not missing, "operations without a summary or description:\n" + "\n".join(missing)
    summaries = [op["summary"] for op in operations(schema).values()]
    # A bare handler name is no summary.
    assert not [s for s in summaries if re.fullmatch(r"[A-Za-z]+(?:[A-Z][a-z]+)*", s) and " " not in s]


async def test_money_writes_pagination_and_errors_have_examples(client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    ops = operations(schema)
    for name, status in MONEY_WRITES.items():
        operation = ops[name]
        body = operation["requestBody"]["content"]["application/json"]
        assert body.get("examples"), f"{name}: no request example"
        for item in body["examples"].values():
            assert item["summary"] and item["value"], name
        if status is not None:
            answer = operation["responses"][str(status)]["content"]["application/json"]
            assert answer.get("examples"), f"{name}: no {status} example"
        refused = operation["responses"]["400"]["content"]["application/json"]["examples"]
        (example,) = refused.values()
        assert example["value"]["code"] == "validation_error" and example["value"]["trackingId"]
    assert ops["CreateCharge"]["responses"]["402"]["content"]["application/json"]["examples"]
    for name in PAGINATED:
        page = ops[name]["responses"]["200"]["content"]["application/json"]["examples"]
        assert any(item["value"].get("next_cursor") for item in page.values()), name
    # Every documented error status answers an example in its family's shape.
    for name, operation in ops.items():
        for status, answer in operation["responses"].items():
            if status.startswith(("4", "5")) and "content" in answer:
                media = next(iter(answer["content"].values()))
                assert media.get("examples"), f"{name} {status}: no example"


async def test_the_bearer_scheme_is_documented(client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A tenant API key, or an operator key",
    }
    assert schema["security"] == [{"bearer": []}]


def _asset_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


async def _check_pages(client: httpx.AsyncClient) -> list[str]:
    """Every page offered references only local URLs that answer 200; the others are not offered."""
    offered = []
    for page in DOC_PAGES:
        response = await client.get(page)
        if response.status_code == 404:
            continue
        assert response.status_code == 200, (page, response.status_code)
        offered.append(page)
        urls = _asset_urls(response.text)
        assert urls, page
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), (page, url)
            asset = await client.get(url)
            assert asset.status_code == 200, (page, url)
        assert (
            "cdn." not in response.text
            and "unpkg.com" not in response.text
            and "googleapis" not in response.text
        )
    return offered


async def test_docs_pages_load_only_local_assets(client) -> None:
    offered = await _check_pages(client)
    assert offered == docs.pages(docs.find_assets())
    schema = await client.get("/schema/openapi.json")
    assert schema.status_code == 200
    assert (await client.get("/schema/openapi.yaml")).status_code == 200


async def test_a_ui_whose_files_ship_is_served_from_billfold(make_state, tmp_path, monkeypatch) -> None:
    """The serving path of shipped assets: files in static/swagger-ui/ make /schema/swagger a page
    whose scripts and styles Billfold answers itself. (Stand-in files: this checks the routing.)"""
    folder = tmp_path / "swagger-ui"
    folder.mkdir()
    for name in docs.UIS[0].files:
        (folder / name).write_text(f"/* {name} */\n")
    monkeypatch.setattr(docs, "STATIC", tmp_path)
    state = make_state()
    try:
        async with open_client(state) as client:
            assert await _check_pages(client) == ["/schema/swagger"]
            script = await client.get("/schema/assets/swagger-ui/swagger-ui-bundle.js")
            assert script.text == "/* swagger-ui-bundle.js */\n"
            assert (await client.get("/schema")).status_code == 200  # the first UI is the root
    finally:
        await state.engine.dispose()


# -- a real browser, no network ------------------------------------------------------------------

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
SCREENSHOT = Path(os.environ.get("BILLFOLD_DOCS_SCREENSHOT", "/work/drafts/docs.png"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_swagger_ui_renders_the_operations_in_headless_chromium(database_url, tmp_path) -> None:
    if "swagger-ui" not in docs.find_assets():
        pytest.skip("Swagger UI's files are not on this machine (static/swagger-ui/ or swagger-ui-bundle)")
    port = _free_port()
    env = {**os.environ, "BILLFOLD_DATABASE_URL": database_url, "BILLFOLD_CONFIG": "config/billing.yaml"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "billfold.api.app:create_app_from_env",
            "--factory",
            "--port",
            str(port),
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/schema/swagger"
        from playwright.sync_api import sync_playwright

        requested: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 2000})

            def offline(route: Any) -> None:
                # no network but this machine: any other host is refused
                requested.append(route.request.url)
                if route.request.url.startswith(f"http://127.0.0.1:{port}/"):
                    route.continue_()
                else:
                    route.abort()

            page.route("**/*", offline)
            page.goto(url)
            page.wait_for_selector(".opblock-summary", timeout=60_000)
            operations = page.locator(".opblock-summary-path").all_inner_texts()
            assert any("/v1/billing/charges" in o for o in operations), operations[:20]
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            browser.close()
        assert all(u.startswith(f"http://127.0.0.1:{port}/") for u in requested), requested
        assert SCREENSHOT.stat().st_size > 10_000
    finally:
        server.terminate()
        server.wait(timeout=30)
