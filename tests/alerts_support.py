"""Helpers for the alerts plugin's tests: a real HTTP receiver on 127.0.0.1 that verifies every
delivery with the ``standardwebhooks`` package (an independent implementation) and with the
``X-Billfold-Signature`` header, the plugin's migration, and delivery rounds."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import standardwebhooks

import billfold_alerts
from billfold.db.migrate import Source, upgrade
from billfold_alerts.plugin import dispatcher_for

ALERTS_SOURCE = Source(name="alerts", script_location=Path(billfold_alerts.__file__).parent / "migrations")
ALERTS_TABLES = ("alerts_deliveries", "alerts_endpoints", "alerts_settings")

FAST = {
    "enabled": True,
    "retry_schedule_seconds": [0.2, 0.2, 0.2, 0.2],
    "jitter": 0,
    "poll_interval_seconds": 0.05,
    "lease_seconds": 10,
    "timeout_seconds": 2,
}
"""Retries after 0.2 s instead of minutes (real time: retries never follow the business clock)."""


def migrate_alerts(database_url: str) -> None:
    """Apply the plugin's branch (the shared fixtures migrate the core only) and, on a PostgreSQL
    database shared by the session, empty its tables."""
    plain = database_url.replace("postgresql+asyncpg://", "postgresql://")
    upgrade(plain, sources=[ALERTS_SOURCE])
    if plain.startswith("postgresql://"):

        async def truncate() -> None:
            conn = await asyncpg.connect(plain)
            try:
                await conn.execute(f"TRUNCATE {', '.join(ALERTS_TABLES)}")
            finally:
                await conn.close()

        asyncio.run(truncate())


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 (a thread): records every request, answers from ``script``
    (a list of (status, headers) consumed in order, then ``default``), verifies signatures."""

    secrets: list[str] = field(default_factory=list)
    """Each delivery must verify with every one of these (both schemes)."""
    secrets_by_org: dict[str, list[str]] = field(default_factory=dict)
    """Instead, per ``organization_id`` of the event (several organizations, one receiver)."""
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default: tuple[int, dict[str, str]] = (200, {})
    hold_seconds: float = 0
    received: list[Received] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def verify(self, headers: dict[str, str], body: bytes) -> None:
        secrets = self.secrets_by_org.get(json.loads(body)["organization_id"], self.secrets)
        assert secrets, "no secret to verify with"
        for secret in secrets:
            standardwebhooks.Webhook(secret).verify(body, headers)  # raises when it does not verify
            key = base64.b64decode(secret.removeprefix("whsec_"))
            expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
            offered = headers["x-billfold-signature"].split(",")
            if not any(hmac.compare_digest(expected, o.strip()) for o in offered):
                raise AssertionError(f"X-Billfold-Signature does not verify: {offered}")

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.received.append(Received(self.path, headers, body))
                    status, extra = receiver.script.pop(0) if receiver.script else receiver.default
                    try:
                        receiver.verify(headers, body)
                    except Exception as exc:
                        receiver.failures.append(f"{headers.get('webhook-id')}: {exc!r}")
                if receiver.hold_seconds:
                    time.sleep(receiver.hold_seconds)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            bodies = [r.json for r in self.received]
        return [b for b in bodies if name is None or b["event"] == name]


async def deliver(state: Any) -> int:
    """One delivery round, as the worker's task runs it."""
    return await dispatcher_for(state.hook_state).run()


async def deliver_until(state: Any, done: Callable[[], bool], seconds: float = 10) -> None:
    """Delivery rounds until ``done()`` (retries are due after 0.2 s)."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out waiting for deliveries"
        await deliver(state)
        await asyncio.sleep(0.05)


@pytest.fixture
def alerts_config(database_url: str) -> dict[str, Any]:
    """``config_overrides`` of a module that runs the alerts plugin (its tables, fast retries):
    ``config_overrides = alerts_config`` after importing it."""
    migrate_alerts(database_url)
    return {"plugins": {"alerts": dict(FAST)}}
