"""The error envelope: every error status carries a tracking id (body and header), a machine code
and a message; internal errors leak nothing; rate limits answer 429 with Retry-After."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from litestar import get
from litestar.exceptions import ImproperlyConfiguredException

from billfold import hookimpl
from conftest import ADMIN, assert_error, open_client


async def test_unknown_route_is_404_in_the_envelope(client):
    body = assert_error(await client.get("/v1/no-such-route"), 404, "not_found")
    assert "error" in body
    # also without any credentials and on a deeper unknown path
    assert_error(await client.post("/v1/billing/nope/deeper", json={}), 404, "not_found")


async def test_wrong_method_is_405_in_the_envelope(client, tenant):
    response = await client.delete("/v1/billing/balance", headers=tenant.headers)
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_each_tracking_id_is_new(client):
    first = assert_error(await client.get("/v1/billing/balance"), 401)
    second = assert_error(await client.get("/v1/billing/balance"), 401)
    assert first["trackingId"] != second["trackingId"]


async def test_validation_errors_name_the_field(client, tenant):
    wrong_type = await client.post(
        "/v1/billing/charges", json={"amount_cents": "ten"}, headers=tenant.headers
    )
    body = assert_error(wrong_type, 400, "validation_error", field="amount_cents")
    assert "amount_cents" in body["message"]

    fractional = await client.post("/v1/billing/charges", json={"amount_cents": 1.5}, headers=tenant.headers)
    assert_error(fractional, 400, "validation_error", field="amount_cents")

    missing = await client.post("/v1/billing/charges", json={"description": "x"}, headers=tenant.headers)
    assert_error(missing, 400, "validation_error", field="amount_cents")

    unknown = await client.post(
        "/v1/billing/charges", json={"amount_cents": 5, "amount_usd": "0.05"}, headers=tenant.headers
    )
    assert_error(unknown, 400, "validation_error", field="amount_usd")

    no_body = await client.post("/v1/billing/charges", headers=tenant.headers)
    body = assert_error(no_body, 400, "validation_error")
    assert "body" in body["message"]

    malformed = await client.post(
        "/v1/billing/charges",
        content=b"{not json",
        headers={**tenant.headers, "content-type": "application/json"},
    )
    assert_error(malformed, 400)

    negative = await client.post("/v1/billing/charges", json={"amount_cents": -5}, headers=tenant.headers)
    assert_error(negative, 400, "validation_error", field="amount_cents")

    bad_query = await client.get("/v1/billing/transactions?offset=-1", headers=tenant.headers)
    assert_error(bad_query, 400, "validation_error", field="offset")


async def test_business_errors_carry_a_fix_hint_and_extra_fields(client, new_tenant):
    poor = await new_tenant(balance=100)
    response = await client.post("/v1/billing/charges", json={"amount_cents": 150}, headers=poor.headers)
    body = assert_error(response, 402, "insufficient_funds")
    assert body["error"]["fix"]
    assert body["balance_cents"] == 100
    assert body["required_cents"] == 150


class ExplodingRoutes:
    """A throwaway plugin that mounts a route which fails with an internal error."""

    secret = f"SECRET-{uuid.uuid4().hex}"

    @hookimpl
    def billfold_routes(self, state: Any) -> list[Any]:
        secret = self.secret

        @get("/v1/testplugin/explode", sync_to_thread=False)
        def explode() -> dict[str, str]:
            raise RuntimeError(f"database password is {secret}")

        @get("/v1/testplugin/misconfigured", sync_to_thread=False)
        def misconfigured() -> dict[str, str]:
            raise ImproperlyConfiguredException(f"the vault token {secret} is wrong")

        return [explode, misconfigured]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_internal_error_has_a_tracking_id_and_no_traceback(state):
    plugin = ExplodingRoutes()
    state.pm.register(plugin, name="exploding-routes")
    # Litestar's logging set-up replaces the root handlers (so pytest's caplog sees nothing):
    # listen on the API logger itself.
    captured = _Records()
    api_logger = logging.getLogger("billfold.api")
    api_logger.addHandler(captured)
    try:
        async with open_client(state) as client:
            response = await client.get("/v1/testplugin/explode")
    finally:
        api_logger.removeHandler(captured)
        state.pm.unregister(plugin)

    body = assert_error(response, 500, "internal_error")
    assert "tracking id" in body["message"]
    text = response.text
    for leak in ("Traceback", "RuntimeError", plugin.secret, 'File "', ".py"):
        assert leak not in text, f"500 body leaks {leak!r}: {text}"
    # The operator finds the failure (with its traceback) in the log under the same tracking id.
    logged = [r for r in captured.records if body["trackingId"] in r.getMessage()]
    assert logged, "the tracking id is not in the log"
    assert any(r.exc_info and plugin.secret in str(r.exc_info[1]) for r in logged)


async def test_internal_http_exceptions_are_internal_errors_too(state):
    """A 500 raised as an HTTPException (e.g. Litestar's ImproperlyConfiguredException) gets the
    same treatment as any other internal error: generic message, no internals in the body."""
    plugin = ExplodingRoutes()
    state.pm.register(plugin, name="exploding-routes")
    try:
        async with open_client(state) as client:
            response = await client.get("/v1/testplugin/misconfigured")
    finally:
        state.pm.unregister(plugin)
    assert_error(response, 500, "internal_error")
    assert plugin.secret not in response.text
    assert "vault" not in response.text


async def test_openapi_document_is_served(client):
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    paths = response.json()["paths"]
    for path in (
        "/v1/billing/charges",
        "/v1/billing/transactions",
        "/v1/orgs/{org_id}/billing",
        "/v1/billing/balance",
    ):
        assert path in paths, sorted(paths)
    # every operation has its own id (clients generate method names from them)
    ids = [
        op["operationId"]
        for item in paths.values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    ]
    assert len(ids) == len(set(ids))


async def test_rate_limit_answers_429_with_retry_after(make_state, new_tenant):
    state = make_state({"rate_limits": {"enabled": True, "requests": 3, "unit": "minute"}})
    try:
        async with open_client(state) as client:
            created = await client.post("/v1/admin/organizations", json={"name": "Limited"}, headers=ADMIN)
            assert created.status_code == 201, created.text
            other = await client.post("/v1/admin/organizations", json={"name": "Other"}, headers=ADMIN)
            assert other.status_code == 201, other.text
            headers = {"Authorization": f"Bearer {created.json()['api_key']}"}

            for _ in range(3):
                ok = await client.get("/v1/billing", headers=headers)
                assert ok.status_code == 200, ok.text
            limited = await client.get("/v1/billing", headers=headers)
            body = assert_error(limited, 429, "rate_limited")
            assert int(limited.headers["Retry-After"]) >= 1
            assert body["error"].get("fix")

            # the limit is per credential: another tenant's key is not limited by the first one
            other_headers = {"Authorization": f"Bearer {other.json()['api_key']}"}
            assert (await client.get("/v1/billing/balance", headers=other_headers)).status_code == 200
            # and health checks are never limited
            for _ in range(5):
                assert (await client.get("/health")).status_code == 200
    finally:
        await state.engine.dispose()


async def test_rate_limit_keeps_only_the_current_window(make_state, monkeypatch):
    """One counter per key and window: the windows gone by are not kept in memory."""
    import billfold.api.ratelimit as ratelimit

    clock = [1_000_000.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    state = make_state({"rate_limits": {"enabled": True, "requests": 5, "unit": "second"}})
    try:
        async with open_client(state) as client:
            created = await client.post("/v1/admin/organizations", json={"name": "Busy"}, headers=ADMIN)
            headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
            counters = state.rate_limit_counters
            assert isinstance(counters, ratelimit.MemoryWindowCounters)

            for second in range(100):  # 100 one-second windows, each used past its limit
                for used in range(1, 6):
                    ok = await client.get("/v1/billing/balance", headers=headers)
                    assert ok.status_code == 200, (second, used, ok.text)
                    assert ok.headers["RateLimit-Remaining"] == str(5 - used)
                assert_error(await client.get("/v1/billing/balance", headers=headers), 429, "rate_limited")
                clock[0] += 1
            assert len(counters.counts) == 1  # this window's counter for the key, nothing older
    finally:
        await state.engine.dispose()


async def test_rate_limit_in_redis_is_shared_by_processes(make_state):
    """With store: redis, two servers (two AppStates, as two worker processes) count together."""
    import redis.asyncio
    import redis.exceptions

    probe = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        await probe.ping()
    except (OSError, redis.exceptions.ConnectionError) as error:
        pytest.skip(f"no Redis on 127.0.0.1:6379: {error}")
    finally:
        await probe.aclose()
    limits = {"rate_limits": {"enabled": True, "requests": 6, "unit": "minute", "store": "redis"}}
    first, second = make_state(limits), make_state(limits)
    try:
        async with open_client(first) as one, open_client(second) as two:
            created = await one.post("/v1/admin/organizations", json={"name": "Shared"}, headers=ADMIN)
            headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
            answers = await asyncio.gather(
                *(client.get("/v1/billing/balance", headers=headers) for client in [one, two] * 5)
            )
            assert sorted(r.status_code for r in answers) == [200] * 6 + [429] * 4
            remaining = sorted(int(r.headers["RateLimit-Remaining"]) for r in answers if r.status_code == 200)
            assert remaining == [0, 1, 2, 3, 4, 5]  # every request got its own count
            for response in answers:
                if response.status_code == 429:
                    assert int(response.headers["Retry-After"]) >= 1
    finally:
        await first.engine.dispose()
        await second.engine.dispose()


async def test_a_client_that_hangs_up_mid_body_is_not_a_server_error(client, tenant, caplog):
    """The client sends its headers and goes away before the body: nothing is charged, and the
    log says 499 client_closed_request at INFO, not an ERROR with a 500."""
    app = client._transport.app  # type: ignore[attr-defined]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/billing/charges",
        "raw_path": b"/v1/billing/charges",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", tenant.headers["Authorization"].encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"40"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver.local", 80),
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    caplog.set_level(logging.INFO, logger="billfold")
    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
    lines = [r for r in caplog.records if r.name.startswith("billfold")]
    assert any("499 client_closed_request" in r.getMessage() for r in lines), lines
    assert not [r for r in lines if r.levelno >= logging.ERROR]
    balance = await client.get("/v1/billing/balance", headers=tenant.headers)
    assert balance.json()["free"] == 0
