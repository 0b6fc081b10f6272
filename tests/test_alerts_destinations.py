"""Where webhooks may go. In production an endpoint must be https and resolve only to public
addresses, checked at creation and again on the address each delivery connects to (a name that
resolves elsewhere later — DNS rebinding — is refused at connection time); redirects are never
followed. No request ever reaches a refused address: the receiver listens on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from alerts_support import FAST, Receiver, deliver, migrate_alerts
from billfold import hookimpl
from billfold.payments.local import LocalProvider
from billfold.plugins import create_plugin_manager
from billfold_alerts import destinations
from conftest import ADMIN, assert_error, open_client

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


class Elsewhere(LocalProvider):
    name = "elsewhere"


class ProductionProvider:
    """Production refuses the local provider: any other one will do for these tests."""

    @hookimpl(tryfirst=True)
    def billfold_payment_provider(self) -> LocalProvider:
        return Elsewhere()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A resolver stub: name → addresses (what a hosts entry or a hostile DNS server answers)."""
    table: dict[str, list[str]] = {}

    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"{host} does not resolve")
        return table[host]

    monkeypatch.setattr(destinations, "resolver", resolve)
    return table


@pytest.fixture
def alerts_db(database_url: str) -> str:
    migrate_alerts(database_url)
    return database_url


@pytest.fixture
async def production(make_state, alerts_db) -> Any:
    pm = create_plugin_manager()
    pm.register(ProductionProvider(), name="production-provider")
    state = make_state({"environment": "production", "plugins": {"alerts": dict(FAST)}}, pm=pm)
    async with open_client(state) as client:
        created = await client.post("/v1/admin/organizations", json={"name": "Prod"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
        yield state, client, headers, created.json()["id"]
    await state.engine.dispose()


async def test_production_refuses_private_loopback_metadata_and_plain_http(production, names, receiver):
    _state, client, headers, _ = production
    port = receiver.url.split(":")[2].split("/")[0]
    names["loopback.example"] = ["127.0.0.1"]
    names["mixed.example"] = ["93.184.215.14", "10.1.2.3"]
    names["public.example"] = ["93.184.215.14"]
    refusals = {
        "https://10.0.0.1/hooks": "destination_not_allowed",
        "https://169.254.169.254/latest/meta-data": "destination_not_allowed",
        "https://[fd00:ec2::254]/": "destination_not_allowed",
        "https://[::ffff:127.0.0.1]/": "destination_not_allowed",
        "https://100.100.100.200/": "destination_not_allowed",
        "https://224.0.0.1/": "destination_not_allowed",
        "https://localhost/hooks": "destination_not_allowed",
        f"https://127.0.0.1:{port}/hooks": "destination_not_allowed",
        f"https://loopback.example:{port}/hooks": "destination_not_allowed",
        "https://mixed.example/hooks": "destination_not_allowed",
        "https://nowhere.example/hooks": "destination_unresolvable",
        "http://public.example/hooks": "insecure_url",
        receiver.url: "insecure_url",
    }
    for url, code in refusals.items():
        response = await client.post("/v1/webhooks", json={"url": url, "events": ["*"]}, headers=headers)
        assert_error(response, 422, code, field="url")
    ok = await client.post(
        "/v1/webhooks", json={"url": "https://public.example/hooks", "events": ["*"]}, headers=headers
    )
    assert ok.status_code == 201, ok.text
    patched = await client.patch(
        f"/v1/webhooks/{ok.json()['id']}", json={"url": "https://10.0.0.1/"}, headers=headers
    )
    assert_error(patched, 422, "destination_not_allowed", field="url")
    assert receiver.received == []


async def test_a_name_rebound_to_loopback_after_creation_is_refused_at_connection(
    production, names, receiver
):
    state, client, headers, _ = production
    port = receiver.url.split(":")[2].split("/")[0]
    names["hooks.example"] = ["93.184.215.14"]
    created = await client.post(
        "/v1/webhooks", json={"url": f"https://hooks.example:{port}/hooks", "events": ["*"]}, headers=headers
    )
    assert created.status_code == 201, created.text
    names["hooks.example"] = ["127.0.0.1"]  # the DNS answer changes after the check
    tested = await client.post(f"/v1/webhooks/{created.json()['id']}/test", headers=headers)
    assert tested.status_code == 200, tested.text
    body = tested.json()
    assert body["status"] == "pending" and body["status_codes"] == [None]
    assert body["last_error"].startswith("destination_not_allowed"), body
    await deliver(state)
    assert receiver.received == []


async def test_allowed_networks_let_an_operator_reach_an_internal_receiver(make_state, alerts_db, names):
    pm = create_plugin_manager()
    pm.register(ProductionProvider(), name="production-provider")
    config = {**FAST, "allowed_networks": ["10.20.0.0/16"]}
    state = make_state({"environment": "production", "plugins": {"alerts": config}}, pm=pm)
    names["internal.example"] = ["10.20.1.2"]
    async with open_client(state) as client:
        created = (await client.post("/v1/admin/organizations", json={"name": "P"}, headers=ADMIN)).json()
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        ok = await client.post(
            "/v1/webhooks", json={"url": "https://internal.example/h", "events": ["*"]}, headers=headers
        )
        assert ok.status_code == 201, ok.text
        refused = await client.post(
            "/v1/webhooks", json={"url": "https://10.21.0.1/h", "events": ["*"]}, headers=headers
        )
        assert_error(refused, 422, "destination_not_allowed")
    await state.engine.dispose()


async def test_development_allows_loopback_over_http_but_not_private_networks(
    make_state, alerts_db, receiver
):
    state = make_state({"plugins": {"alerts": dict(FAST)}})
    async with open_client(state) as client:
        created = (await client.post("/v1/admin/organizations", json={"name": "D"}, headers=ADMIN)).json()
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
            ok = await client.post("/v1/webhooks", json={"url": url, "events": ["*"]}, headers=headers)
            assert ok.status_code == 201, (url, ok.text)
        refused = await client.post(
            "/v1/webhooks", json={"url": "http://169.254.169.254/", "events": ["*"]}, headers=headers
        )
        assert_error(refused, 422, "destination_not_allowed")
    await state.engine.dispose()


@pytest.fixture
def https_redirector(tmp_path: Any) -> Iterator[tuple[str, Any, list[str]]]:
    """An https server on 127.0.0.2 (certificate for hooks.example, from openssl) that answers
    every delivery with a redirect to 127.0.0.1; yields (ca file, set location, paths seen)."""
    import http.server
    import shutil
    import ssl
    import subprocess
    import threading

    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=hooks.example", "-addext", "subjectAltName=DNS:hooks.example"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    seen: list[str] = []
    location: dict[str, str] = {}

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            seen.append(self.path)
            self.send_response(307)
            self.send_header("Location", location["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Redirect)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield str(cert), (server.server_address[1], location), seen
    server.shutdown()
    server.server_close()


async def test_in_production_an_https_redirect_to_loopback_is_not_followed(
    make_state, alerts_db, names, receiver, https_redirector
):
    """The receiver's https server (trusted through ca_bundle, its network allowed) answers a
    redirect to 127.0.0.1: the delivery fails with that status and nothing reaches 127.0.0.1."""
    ca_file, (port, location), seen = https_redirector
    location["to"] = receiver.url
    pm = create_plugin_manager()
    pm.register(ProductionProvider(), name="production-provider")
    config = {**FAST, "allowed_networks": ["127.0.0.2/32"], "ca_bundle": ca_file}
    state = make_state({"environment": "production", "plugins": {"alerts": config}}, pm=pm)
    names["hooks.example"] = ["127.0.0.2"]
    async with open_client(state) as client:
        created = await client.post("/v1/admin/organizations", json={"name": "Prod"}, headers=ADMIN)
        headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
        hook = await client.post(
            "/v1/webhooks",
            json={"url": f"https://hooks.example:{port}/hooks", "events": ["*"]},
            headers=headers,
        )
        assert hook.status_code == 201, hook.text
        tested = await client.post(f"/v1/webhooks/{hook.json()['id']}/test", headers=headers)
        assert tested.status_code == 200, tested.text
        assert tested.json()["status_codes"] == [307], tested.json()  # reached over TLS, not followed
        for _ in range(4):
            await deliver(state)
        assert seen and set(seen) == {"/hooks"}
        assert receiver.received == []  # the redirect's target never saw a request
    await state.engine.dispose()
