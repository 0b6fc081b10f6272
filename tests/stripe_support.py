"""Helpers and fixtures for the Stripe plugin's tests.

- ``localstripe``: a localstripe server (a stateful fake of Stripe's API) run inside the test's
  event loop, on 127.0.0.1 and a free port, with an empty store for every test.
- ``webhook_receiver``: an HTTP server on 127.0.0.1 that captures what localstripe delivers.
- ``RecordedStripeHTTPClient``: the SDK's httpx client, except that Checkout and billing-portal
  sessions (which localstripe lacks) are answered from ``tests/recorded/stripe/*.json``; every
  request is kept for assertions.
- ``provider``: a :class:`~billfold_stripe.provider.StripeProvider` wired to the two above.

Import the fixtures you use into the test module (``from stripe_support import localstripe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import time
import warnings
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import stripe
from aiohttp import web

from billfold_stripe.config import StripeConfig
from billfold_stripe.provider import StripeProvider

with warnings.catch_warnings():  # localstripe registers plain functions as aiohttp handlers
    warnings.simplefilter("ignore", DeprecationWarning)
    from localstripe import resources, webhooks
    from localstripe.server import app as localstripe_app

# localstripe pickles its whole store to /tmp/localstripe.pickle on every write (shared by every
# instance on the host); the tests keep it in memory.
resources.Store.dump_to_disk = lambda self: None

SECRET_KEY = "sk_test_billfold"
WEBHOOK_SECRET = "whsec_billfold_test"
RECORDED = Path(__file__).resolve().parent / "recorded" / "stripe"
WEBHOOK_EVENTS = [
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "setup_intent.succeeded",
    "checkout.session.completed",
]

# Card numbers localstripe understands (as numbers; of the magic tokens only pm_card_visa works).
CARD_OK = "4242424242424242"
CARD_DECLINED_AT_CHARGE = "4000000000000341"  # attaches, then every charge is declined
CARD_DECLINED_AT_ATTACH = "4000000000000002"
CARD_3DS = "4000002760003184"  # every payment needs 3-D Secure (off session too, on localstripe)


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header for ``payload``, as Stripe computes it."""
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def recorded(name: str) -> dict[str, Any]:
    """A recorded Stripe JSON object from ``tests/recorded/stripe/<name>.json``."""
    data: dict[str, Any] = json.loads((RECORDED / f"{name}.json").read_text())
    return data


def stripe_config(api_base: str | None, **overrides: Any) -> StripeConfig:
    values: dict[str, Any] = {
        "enabled": True,
        "secret_key": SECRET_KEY,
        "webhook_secret": WEBHOOK_SECRET,
        "publishable_key": "pk_test_billfold",
        "api_base": api_base,
        **overrides,
    }
    return StripeConfig(**values)


# -- localstripe -------------------------------------------------------------------------------


class LocalStripe:
    """A running localstripe, plus a separate SDK client for arranging tests (what a browser or the
    Stripe Dashboard would do)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._http = stripe.HTTPXClient(timeout=10)
        self.client = stripe.StripeClient(
            SECRET_KEY, base_addresses={"api": base_url}, http_client=self._http, max_network_retries=0
        )

    async def card(self, number: str, *, customer: str | None = None) -> str:
        """Create a card PaymentMethod (as Stripe.js would), attached to ``customer`` if given."""
        method = await self.client.v1.payment_methods.create_async(
            {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
        )
        if customer:
            await self.client.v1.payment_methods.attach_async(method.id, {"customer": customer})
        return str(method.id)

    async def sepa_debit(self, iban: str = "DE89370400440532013000") -> str:
        method = await self.client.v1.payment_methods.create_async(
            {
                "type": "sepa_debit",
                "sepa_debit": {"iban": iban},
                "billing_details": {"name": "Acme GmbH", "email": "billing@example.com"},
            }
        )
        return str(method.id)

    async def authenticate(self, intent_id: str, client_secret: str, *, success: bool = True) -> str:
        """Complete (or fail) 3-D Secure, as the customer would in the bank's page; the new status."""
        raw = await self.client.raw_request_async(
            "post",
            f"/v1/payment_intents/{intent_id}/_authenticate",
            client_secret=client_secret,
            success="true" if success else "false",
        )
        return str(json.loads(raw.body)["status"])

    async def register_webhook(
        self,
        url: str,
        *,
        events: list[str] | None = None,
        secret: str = WEBHOOK_SECRET,
        name: str = "billfold",
    ) -> None:
        """Make localstripe POST signed events to ``url`` (about a second after each event)."""
        body = {"url": url, "secret": secret, "events": events or WEBHOOK_EVENTS}
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{self.base_url}/_config/webhooks/{name}", json=body)
        assert response.status_code == 200, response.text

    async def close(self) -> None:
        await self._http.close_async()


async def _stop_pending_deliveries() -> None:
    """Cancel localstripe's scheduled webhook deliveries (they would outlive the test's loop)."""
    pending = [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == webhooks._send_webhook.__qualname__
    ]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def _fresh_localstripe_app() -> web.Application:
    """A copy of localstripe's aiohttp app: an Application is tied to the first loop that runs it,
    and every test has its own loop."""
    app = web.Application(middlewares=list(localstripe_app.middlewares))
    for on_prepare in localstripe_app.on_response_prepare:
        app.on_response_prepare.append(on_prepare)
    for route in localstripe_app.router.routes():
        assert route.resource is not None
        app.router.add_route(route.method, route.resource.canonical, route.handler)
    return app


@pytest.fixture
async def localstripe() -> AsyncIterator[LocalStripe]:
    """localstripe on 127.0.0.1 (its own CLI binds every interface), with an empty store."""
    resources.store.clear()
    webhooks._webhooks.clear()
    runner = web.AppRunner(_fresh_localstripe_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server = LocalStripe(f"http://127.0.0.1:{port}")
    try:
        yield server
    finally:
        await _stop_pending_deliveries()
        await server.close()
        await runner.cleanup()
        resources.store.clear()
        webhooks._webhooks.clear()


# -- a webhook receiver ------------------------------------------------------------------------


@dataclass
class Delivery:
    payload: bytes
    headers: dict[str, str]

    @property
    def type(self) -> str:
        return str(json.loads(self.payload)["type"])

    @property
    def object(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.payload)["data"]["object"]
        return data


@dataclass
class WebhookReceiver:
    url: str
    deliveries: list[Delivery] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(
        self, event_type: str, *, object_id: str | None = None, seconds: float = 5
    ) -> Delivery:
        """The first delivery of ``event_type`` (for ``object_id``), waiting up to ``seconds``."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            for delivery in self.deliveries:
                if delivery.type == event_type and object_id in (None, delivery.object.get("id")):
                    return delivery
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                seen = [d.type for d in self.deliveries]
                raise AssertionError(f"no {event_type} delivered within {seconds}s (got {seen})")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """An HTTP endpoint on 127.0.0.1 that records every POST and answers 200."""
    receiver = WebhookReceiver(url="")

    async def receive(request: web.Request) -> web.Response:
        receiver.deliveries.append(Delivery(await request.read(), dict(request.headers)))
        receiver._arrived.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/stripe/webhook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/stripe/webhook"
    try:
        yield receiver
    finally:
        await runner.cleanup()


# -- recorded responses for what localstripe lacks ---------------------------------------------


@dataclass
class SentRequest:
    method: str
    path: str
    params: dict[str, str]
    """The form body, flattened the way Stripe encodes it: ``line_items[0][price_data][currency]``."""
    headers: Mapping[str, str]


class RecordedStripeHTTPClient(stripe.HTTPXClient):
    """``stripe.HTTPXClient`` that answers some requests from recordings and forwards the rest.

    ``RECORDINGS`` maps ``(method, path)`` to a recording name, or a list of names picked by the
    request's ``mode`` (Checkout answers differ by mode). Every request is kept in ``sent``.
    """

    RECORDINGS: dict[tuple[str, str], dict[str, str]] = {
        ("post", "/v1/checkout/sessions"): {
            "payment": "checkout_session_payment",
            "subscription": "checkout_session_subscription",
        },
        ("post", "/v1/billing_portal/sessions"): {"": "billing_portal_session"},
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[SentRequest] = []
        self._next: dict[tuple[str, str], tuple[str, int]] = {}

    def answer_next(self, method: str, path: str, name: str, *, status: int = 200) -> None:
        """Answer the next ``method path`` request with recording ``name`` and HTTP ``status`` (once).

        For what real Stripe answers and localstripe never does (e.g. a 402 whose error carries
        the PaymentIntent)."""
        self._next[(method.lower(), path)] = (name, status)

    def requests_to(self, path: str) -> list[SentRequest]:
        return [request for request in self.sent if request.path == path]

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        path = urlsplit(url).path
        body = post_data.decode() if isinstance(post_data, bytes) else post_data or ""
        params = dict(parse_qsl(body or urlsplit(url).query, keep_blank_values=True))
        request = SentRequest(method.lower(), path, params, dict(headers))
        self.sent.append(request)
        once = self._next.pop((request.method, path), None)
        if once is not None:
            name, status = once
            return (RECORDED / f"{name}.json").read_bytes(), status, {"request-id": "req_recorded"}
        choices = self.RECORDINGS.get((request.method, path))
        if choices is None:
            return await super().request_async(method, url, headers, post_data)
        recording = choices.get(params.get("mode", ""))
        if recording is None:
            error = {"error": {"type": "invalid_request_error", "message": "no recording for this request"}}
            return json.dumps(error).encode(), 400, {"request-id": "req_recorded"}
        return (RECORDED / f"{recording}.json").read_bytes(), 200, {"request-id": "req_recorded"}


@pytest.fixture
def recording_http() -> RecordedStripeHTTPClient:
    return RecordedStripeHTTPClient(timeout=10)


@pytest.fixture
async def provider(
    localstripe: LocalStripe, recording_http: RecordedStripeHTTPClient
) -> AsyncIterator[StripeProvider]:
    """The Stripe provider against localstripe, Checkout and portal from recordings."""
    stripe_provider = StripeProvider(stripe_config(localstripe.base_url), http_client=recording_http)
    try:
        yield stripe_provider
    finally:
        await stripe_provider.close()
