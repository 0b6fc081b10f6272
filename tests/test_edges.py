"""Edge probes from the hardening issue, through the real HTTP stack: hostile or malformed money
requests are refused with the error envelope naming the field, and nothing is written.

One section per probe; each asserts the status, the envelope and that no balance, entry, payment,
hold, provider event or idempotency key changed."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from conftest import (
    ADMIN,
    ADMIN_KEY,
    POSTGRES_URL,
    ROOT,
    assert_error,
    config_text,
    open_client,
    run_cli,
)
from stripe_support import WEBHOOK_SECRET, sign

MiB = 1024 * 1024
TWO_53, TWO_63, TWO_64 = 2**53, 2**63, 2**64
TOO_BIG_AMOUNTS = [str(TWO_53), str(TWO_63), str(TWO_64)]
"""Amounts past the largest one accepted (2**53 - 1), as raw JSON tokens."""
TOO_BIG_IDS = [str(TWO_63), str(TWO_64)]
"""Identifiers past PostgreSQL's bigint."""
NOT_INTEGERS = ['"100"', "1e3", "100.0"]
"""A string and two floats: never coerced into an integer field."""

STRIPE_OVERRIDES = {
    "plugins": {
        "stripe": {
            "enabled": True,
            "secret_key": "sk_test_edges",
            "webhook_secret": WEBHOOK_SECRET,
            # Nothing here calls Stripe; an address where nothing listens keeps it that way.
            "api_base": "http://127.0.0.1:9",
        }
    }
}

postgres_only = pytest.mark.skipif(not POSTGRES_URL, reason="needs BILLFOLD_TEST_POSTGRES_URL")


# -- helpers -----------------------------------------------------------------------------------


async def snapshot(state: Any) -> dict[str, Any]:
    """Every row a money request could write: balances, entries, holds, payments, profiles,
    provider events and idempotency keys."""
    tables = {
        "ledger_accounts": "org_id",
        "ledger_entries": "id",
        "ledger_holds": "id",
        "payments": "id",
        "billing_profiles": "org_id",
        "provider_events": "event_id",
        "idempotency_keys": "key",
    }
    found: dict[str, Any] = {}
    async with state.engine.connect() as conn:
        for table, order in tables.items():
            rows = (await conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))).all()
            found[table] = [tuple(row) for row in rows]
    return found


async def count(state: Any, sql: str, **params: Any) -> int:
    async with state.engine.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar_one())


def raw_json(template: str, token: str) -> bytes:
    """``template`` with ``{}`` replaced by a raw JSON token (1e3 stays 1e3, not 1000.0)."""
    return template.replace("{}", token).encode()


async def post_raw(
    client: httpx.AsyncClient, method: str, path: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await client.request(
        method, path, content=body, headers={**headers, "Content-Type": "application/json"}
    )


async def create_tenant(
    client: httpx.AsyncClient, *, currency: str = "usd", balance: int = 0
) -> tuple[str, dict[str, str]]:
    """A new organization: its id and the headers of its API key."""
    created = await client.post(
        "/v1/admin/organizations", json={"name": "Edge Co", "currency": currency}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    org_id = created.json()["id"]
    headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
    if balance:
        adjusted = await client.post(
            f"/v1/admin/organizations/{org_id}/adjustments",
            json={"amount_cents": balance, "description": "opening balance"},
            headers=ADMIN,
        )
        assert adjusted.status_code == 201, adjusted.text
    return org_id, headers


async def save_card(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    saved = await client.post(
        "/v1/billing/default-payment-method", json={"payment_method_id": "pm_card_visa"}, headers=headers
    )
    assert saved.status_code == 200, saved.text


@pytest.fixture
async def stripe_client(make_state: Callable[..., Any]) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """A Billfold with the Stripe plugin enabled (webhooks are verified with WEBHOOK_SECRET)."""
    app_state = make_state(STRIPE_OVERRIDES)
    try:
        async with open_client(app_state) as test_client:
            yield app_state, test_client
    finally:
        await app_state.engine.dispose()


def stripe_event(event_id: str, org_id: str, amount_cents: int = 2500) -> bytes:
    """A payment_intent.succeeded event for ``org_id`` (as Stripe would deliver it, unsigned)."""
    event = {
        "id": event_id,
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": int(time.time()),
        "data": {
            "object": {
                "id": f"pi_{event_id}",
                "object": "payment_intent",
                "amount": amount_cents,
                "currency": "usd",
                "status": "succeeded",
                "metadata": {"org_id": org_id, "purpose": "top_up"},
            }
        },
    }
    return json.dumps(event).encode()


# -- probe: major-unit top-up amounts (document 004) ------------------------------------------


async def test_major_unit_top_up_refuses_huge_strings_and_exponents_fast(client, state) -> None:
    """POST /v1/billing/topup: a huge or non-plain amount is 400 naming `amount`, answered fast
    (the length is checked before any numeric conversion); 10.5 EUR is accepted."""
    _org_id, headers = await create_tenant(client, currency="eur")
    await save_card(client, headers)
    before = await snapshot(state)

    hostile = [b'{"amount": "1e999990"}', b'{"amount": ' + b"9" * 100_000 + b"}"]
    for index, body in enumerate(hostile):
        started = time.perf_counter()
        response = await post_raw(
            client, "POST", "/v1/billing/topup", body, {**headers, "Idempotency-Key": f"huge-{index}"}
        )
        elapsed = time.perf_counter() - started
        assert_error(response, 400, field="amount")
        assert elapsed < 1.0, f"{body[:30]!r}… took {elapsed:.2f}s"

    for token in ['"100"', '"10.50"', "1e3", "1E3", "10e-1"]:
        response = await post_raw(
            client,
            "POST",
            "/v1/billing/topup",
            raw_json('{"amount": {}}', token),
            {**headers, "Idempotency-Key": f"bad-{token}"},
        )
        assert_error(response, 400, field="amount")
    assert await snapshot(state) == before

    accepted = await post_raw(client, "POST", "/v1/billing/topup", b'{"amount": 10.5}', headers)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["amount"] == 10.5
    balance = await client.get("/v1/billing/balance", headers=headers)
    assert balance.json()["free"] == 10.5


# -- probe: integers past 2**53 / 2**63 / 2**64, strings and floats in integer fields ----------

# (method, path template, body template, field, too-big tokens); {org} and {hold} are filled in.
INTEGER_FIELDS = [
    ("POST", "/v1/billing/charges", '{"amount_cents": {}}', "amount_cents", TOO_BIG_AMOUNTS),
    ("POST", "/v1/billing/charges", '{"amount_cents": 1, "call_id": {}}', "call_id", TOO_BIG_IDS),
    (
        "POST",
        "/v1/billing/charges",
        '{"amount_cents": 1, "phone_number_id": {}}',
        "phone_number_id",
        TOO_BIG_IDS,
    ),
    ("POST", "/v1/billing/holds", '{"amount_cents": {}}', "amount_cents", TOO_BIG_AMOUNTS),
    ("POST", "/v1/billing/holds/{hold}/capture", '{"amount_cents": {}}', "amount_cents", TOO_BIG_AMOUNTS),
    ("POST", "/v1/billing/top-up", '{"amount_cents": {}}', "amount_cents", TOO_BIG_AMOUNTS),
    ("POST", "/v1/orgs/{org}/billing/top-up", '{"amount_cents": {}}', "amount_cents", TOO_BIG_AMOUNTS),
    ("POST", "/v1/billing/{org}/top-up", '{"amount_cents": {}}', "amount_cents", TOO_BIG_AMOUNTS),
    ("PUT", "/v1/billing/auto-reload", '{"threshold_cents": {}}', "threshold_cents", TOO_BIG_AMOUNTS),
    ("PUT", "/v1/billing/auto-reload", '{"amount_cents": {}}', "amount_cents", TOO_BIG_AMOUNTS),
    (
        "PUT",
        "/v1/billing/auto-reload",
        '{"monthly_limit_cents": {}}',
        "monthly_limit_cents",
        TOO_BIG_AMOUNTS,
    ),
    (
        "PATCH",
        "/v1/billing",
        '{"auto_reload_minimum_cents": {}}',
        "auto_reload_minimum_cents",
        TOO_BIG_AMOUNTS,
    ),
    (
        "PATCH",
        "/v1/billing",
        '{"auto_reload_amount_cents": {}}',
        "auto_reload_amount_cents",
        TOO_BIG_AMOUNTS,
    ),
    (
        "PATCH",
        "/v1/billing",
        '{"auto_reload_monthly_limit_cents": {}}',
        "auto_reload_monthly_limit_cents",
        TOO_BIG_AMOUNTS,
    ),
    (
        "POST",
        "/v1/admin/organizations/{org}/adjustments",
        '{"amount_cents": {}, "description": "x"}',
        "amount_cents",
        [*TOO_BIG_AMOUNTS, f"-{TWO_53}", f"-{TWO_63 + 1}"],
    ),
    (
        "POST",
        "/v1/admin/organizations/{org}/refunds",
        '{"amount_cents": {}, "description": "x"}',
        "amount_cents",
        TOO_BIG_AMOUNTS,
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "template", "field", "too_big"),
    INTEGER_FIELDS,
    ids=[f"{m} {p} {f}" for m, p, _, f, _ in INTEGER_FIELDS],
)
async def test_integer_fields_refuse_huge_numbers_strings_and_floats(
    client, state, method: str, path: str, template: str, field: str, too_big: list[str]
) -> None:
    """2**53 (amounts), 2**63 and 2**64 are 400 naming the field; "100", 1e3 and 100.0 too (no
    coercion); nothing is written."""
    org_id, headers = await create_tenant(client, balance=100_000)
    await save_card(client, headers)
    hold = await client.post("/v1/billing/holds", json={"amount_cents": 500}, headers=headers)
    assert hold.status_code == 201, hold.text
    url = path.format(org=org_id, hold=hold.json()["hold"]["id"])
    auth = ADMIN if url.startswith("/v1/admin/") else headers
    before = await snapshot(state)

    for token in [*too_big, *NOT_INTEGERS]:
        response = await post_raw(
            client, method, url, raw_json(template, token), {**auth, "Idempotency-Key": f"k-{token}"}
        )
        assert_error(response, 400, field=field)

    assert await snapshot(state) == before


# -- probe: text bounds and NUL characters ----------------------------------------------------

# A key holding NUL is reported as its object (`metadata`): the key itself is not echoed back.
TEXT_CASES = [
    ("/v1/billing/charges", {"amount_cents": 1, "description": "d" * 501}, "description"),
    ("/v1/billing/charges", {"amount_cents": 1, "phone_number_value": "1" * 33}, "phone_number_value"),
    ("/v1/billing/charges", {"amount_cents": 1, "description": "a\u0000b"}, "description"),
    ("/v1/billing/charges", {"amount_cents": 1, "phone_number_value": "+1\u0000"}, "phone_number_value"),
    ("/v1/billing/charges", {"amount_cents": 1, "metadata": {"note": "a\u0000b"}}, "metadata.note"),
    ("/v1/billing/charges", {"amount_cents": 1, "metadata": {"a\u0000b": "x"}}, "metadata"),
    ("/v1/billing/holds", {"amount_cents": 1, "description": "d" * 501}, "description"),
    ("/v1/billing/holds", {"amount_cents": 1, "description": "\u0000"}, "description"),
    ("/v1/billing/holds", {"amount_cents": 1, "metadata": {"note": "\u0000"}}, "metadata.note"),
    ("/v1/billing/holds", {"amount_cents": 1, "metadata": {"\u0000": "x"}}, "metadata"),
    ("admin:adjustments", {"amount_cents": 1, "description": "d" * 501}, "description"),
    ("admin:adjustments", {"amount_cents": 1, "description": "a\u0000"}, "description"),
    (
        "admin:adjustments",
        {"amount_cents": 1, "description": "x", "metadata": {"note": "\u0000"}},
        "metadata.note",
    ),
    ("admin:adjustments", {"amount_cents": 1, "description": "x", "metadata": {"k\u0000": 1}}, "metadata"),
    ("admin:refunds", {"amount_cents": 1, "description": "d" * 501}, "description"),
    ("admin:refunds", {"amount_cents": 1, "description": "\u0000"}, "description"),
]


@pytest.mark.parametrize(
    ("route", "body", "field"), TEXT_CASES, ids=[f"{r} {f} {i}" for i, (r, _, f) in enumerate(TEXT_CASES)]
)
async def test_text_over_its_bound_or_with_nul_is_refused(
    client, state, route: str, body: dict[str, Any], field: str
) -> None:
    """description over 500 characters, phone_number_value over 32, and NUL in description,
    phone_number_value, metadata values or keys: 400 naming the field on SQLite and PostgreSQL
    alike, nothing written."""
    org_id, headers = await create_tenant(client, balance=10_000)
    if route.startswith("admin:"):
        path, auth = f"/v1/admin/organizations/{org_id}/{route.split(':')[1]}", ADMIN
    else:
        path, auth = route, headers
    before = await snapshot(state)

    response = await client.post(path, json=body, headers={**auth, "Idempotency-Key": "text-probe"})

    assert_error(response, 400, field=field)
    assert "\\u0000" not in response.text and "\x00" not in response.text  # no NUL echoed back
    assert await snapshot(state) == before


# -- probe: nesting, body size and content type -----------------------------------------------


async def test_deep_nesting_oversized_bodies_and_non_json_are_refused(client, state) -> None:
    """JSON nested 10,000 deep is 400 nesting_too_deep; a body over 1 MiB is 413; a JSON body
    sent as text/plain is 415; nothing written."""
    _org_id, headers = await create_tenant(client, balance=10_000)
    keyed = {**headers, "Idempotency-Key": "shape-probe"}
    before = await snapshot(state)

    deep = b'{"amount_cents": 1, "metadata": {"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}}"
    response = await post_raw(client, "POST", "/v1/billing/charges", deep, keyed)
    assert_error(response, 400, "nesting_too_deep")

    huge = json.dumps({"amount_cents": 1, "metadata": {"blob": "x" * MiB}}).encode()
    assert len(huge) > MiB
    response = await post_raw(client, "POST", "/v1/billing/charges", huge, keyed)
    assert_error(response, 413, "payload_too_large")

    plain = json.dumps({"amount_cents": 1}).encode()
    response = await client.post(
        "/v1/billing/charges", content=plain, headers={**keyed, "Content-Type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_media_type")

    assert await snapshot(state) == before


# -- probe: refund references ------------------------------------------------------------------


async def test_a_refund_reference_is_booked_once_even_when_racing(client, state) -> None:
    """The same refund reference twice is 409 duplicate_reference; two racing refunds with one
    reference: exactly one 201, one 409, one refund entry."""
    org_id, headers = await create_tenant(client, balance=10_000)
    path = f"/v1/admin/organizations/{org_id}/refunds"
    body = {"amount_cents": 100, "description": "refund", "reference": "re_1"}

    first = await client.post(path, json=body, headers=ADMIN)
    assert first.status_code == 201, first.text
    before = await snapshot(state)
    second = await client.post(path, json=body, headers=ADMIN)
    assert_error(second, 409, "duplicate_reference", field="reference")
    assert await snapshot(state) == before

    racing = {**body, "reference": "re_2"}
    answers = await asyncio.gather(*(client.post(path, json=racing, headers=ADMIN) for _ in range(2)))
    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    assert_error(next(a for a in answers if a.status_code == 409), 409, "duplicate_reference")
    refunds = await count(
        state,
        "SELECT count(*) FROM ledger_entries WHERE kind = 'refund' AND reference = :ref",
        ref="re_2",
    )
    assert refunds == 1
    balance = await client.get("/v1/billing/balance", headers=headers)
    assert balance.json()["free"] == (10_000 - 200) / 100  # document 004: major units


# -- probe: webhooks naming an unknown organization --------------------------------------------


@pytest.mark.parametrize("named", ["unknown", "malformed"])
async def test_a_webhook_for_an_unknown_organization_is_acknowledged_and_recorded(
    stripe_client, named: str
) -> None:
    """A validly signed event whose metadata names no organization Billfold knows (or no valid id)
    is 200, recorded with outcome unknown_organization, credits nothing; its retry is a duplicate."""
    state, client = stripe_client
    _org_id, headers = await create_tenant(client)
    event_id = f"evt_{named}_org"
    payload = stripe_event(event_id, str(uuid.uuid4()) if named == "unknown" else "not-an-org-id")
    before = await snapshot(state)

    delivered = await client.post(
        "/v1/stripe/webhook", content=payload, headers={"Stripe-Signature": sign(payload)}
    )

    assert delivered.status_code == 200, delivered.text
    assert delivered.json()["idempotent"] is False
    outcome = await count(
        state,
        "SELECT count(*) FROM provider_events WHERE event_id = :id AND outcome = 'unknown_organization'",
        id=event_id,
    )
    assert outcome == 1
    after = await snapshot(state)
    assert len(after["provider_events"]) == len(before["provider_events"]) + 1
    for table in ("ledger_accounts", "ledger_entries", "payments", "idempotency_keys"):
        assert after[table] == before[table], table

    again = await client.post(
        "/v1/webhooks/stripe", content=payload, headers={"Stripe-Signature": sign(payload)}
    )
    assert again.status_code == 200, again.text
    assert again.json()["idempotent"] is True
    assert await snapshot(state) == after
    balance = await client.get("/v1/billing/balance", headers=headers)
    assert balance.json()["free"] == 0


# -- probe: Stripe signature timestamps --------------------------------------------------------


async def test_stripe_signatures_must_be_dated_within_five_minutes(stripe_client) -> None:
    """A signature dated a day ahead, or 301 s in the past, is 400 invalid_signature and nothing is
    recorded; within ±300 s the event is applied."""
    state, client = stripe_client
    org_id, headers = await create_tenant(client)
    before = await snapshot(state)

    for label, offset in (("future", 86_400), ("stale", -301)):
        payload = stripe_event(f"evt_{label}", org_id)
        stamp = int(time.time()) + offset
        response = await client.post(
            "/v1/stripe/webhook",
            content=payload,
            headers={"Stripe-Signature": sign(payload, timestamp=stamp)},
        )
        assert_error(response, 400, "invalid_signature")
    assert await snapshot(state) == before

    for label, offset in (("ahead", 280), ("behind", -280)):
        payload = stripe_event(f"evt_{label}", org_id, amount_cents=1000)
        stamp = int(time.time()) + offset
        response = await client.post(
            "/v1/stripe/webhook",
            content=payload,
            headers={"Stripe-Signature": sign(payload, timestamp=stamp)},
        )
        assert response.status_code == 200, response.text
        assert response.json()["idempotent"] is False
    balance = await client.get("/v1/billing/balance", headers=headers)
    assert balance.json()["free"] == 20.0  # document 004: major units


# -- probe: Idempotency-Key length -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/billing/charges", {"amount_cents": 100}),
        ("/v1/billing/top-up", {"amount_cents": 5000}),
        ("/v1/billing/topup", {"amount": 50}),
    ],
)
async def test_an_idempotency_key_over_255_characters_is_refused(
    client, state, path: str, body: dict[str, Any]
) -> None:
    """An Idempotency-Key of 256 characters is 400 invalid_idempotency_key (nothing written); one
    of 255 is accepted."""
    _org_id, headers = await create_tenant(client, balance=10_000)
    await save_card(client, headers)
    before = await snapshot(state)

    response = await client.post(path, json=body, headers={**headers, "Idempotency-Key": "k" * 256})

    assert_error(response, 400, "invalid_idempotency_key")
    assert await snapshot(state) == before
    accepted = await client.post(path, json=body, headers={**headers, "Idempotency-Key": "k" * 255})
    assert accepted.status_code == 201, accepted.text


# -- probe: top-up idempotency across processes ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def two_servers(database_url: str, tmp_path: Path) -> Iterator[list[str]]:
    """Two uvicorn processes serving the test database (PostgreSQL), each with its own pool and
    its own in-process local payment provider."""
    config = tmp_path / "billing.yaml"
    config.write_text(config_text(database_url=database_url))
    env = {
        **os.environ,
        "BILLFOLD_CONFIG": str(config),
        "BILLFOLD_DATABASE_URL": database_url,
        "BILLFOLD_ADMIN_API_KEY": ADMIN_KEY,
    }
    env.pop("BILLFOLD_PLUGINS", None)
    env.pop("BILLFOLD_TRACE_HOOKS", None)
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    urls = []
    try:
        for index in range(2):
            port = _free_port()
            log = tmp_path / f"server-{index}.log"
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
            processes.append((process, log))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        for (process, log), url in zip(processes, urls, strict=True):
            while True:
                if process.poll() is not None:
                    pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"server at {url} did not become healthy:\n{log.read_text()}")
                time.sleep(0.1)
        yield urls
    finally:
        for process, _log in processes:
            if process.poll() is None:
                process.terminate()
        for process, _log in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.mark.postgres
@postgres_only
async def test_a_top_up_key_is_honoured_across_two_server_processes(two_servers, state) -> None:
    """8 identical top-ups with one Idempotency-Key racing against two processes credit once:
    every answer is 201 with the same payment (replays say so) or 409 in progress; the same key
    with another amount is 409 idempotency_key_reused."""
    first_url, second_url = two_servers
    async with (
        httpx.AsyncClient(base_url=first_url, timeout=30) as first,
        httpx.AsyncClient(base_url=second_url, timeout=30) as second,
    ):
        org_id, headers = await create_tenant(first)
        await save_card(second, headers)
        keyed = {**headers, "Idempotency-Key": "topup-across-processes"}
        before = await snapshot(state)

        answers = await asyncio.gather(
            *(
                (first if index % 2 else second).post(
                    "/v1/billing/top-up", json={"amount_cents": 5000}, headers=keyed
                )
                for index in range(8)
            )
        )

        succeeded = [a for a in answers if a.status_code == 201]
        assert succeeded, [a.text for a in answers]
        for answer in answers:
            if answer.status_code == 409:
                assert_error(answer, 409, "idempotency_request_in_progress")
            else:
                assert answer.status_code == 201, answer.text
        assert len({a.json()["payment_intent_id"] for a in succeeded}) == 1
        # One request ran; every other 201 is a replay of it.
        assert sum(a.headers.get("Idempotent-Replayed") != "true" for a in succeeded) == 1
        assert all(a.json()["status"] == "succeeded" for a in succeeded)

        # Whatever answered 409 now replays the one payment.
        replay = await first.post("/v1/billing/top-up", json={"amount_cents": 5000}, headers=keyed)
        assert replay.status_code == 201, replay.text
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["payment_intent_id"] == succeeded[0].json()["payment_intent_id"]

        balance = await second.get("/v1/billing/balance", headers=headers)
        assert balance.json()["free"] == 50.0  # document 004: major units
        after = await snapshot(state)
        assert len(after["payments"]) == len(before["payments"]) + 1
        assert len(after["ledger_entries"]) == len(before["ledger_entries"]) + 1
        credits = await count(
            state,
            "SELECT count(*) FROM ledger_entries WHERE kind = 'credit' AND CAST(org_id AS TEXT) = :org",
            org=org_id,
        )
        assert credits == 1

        reused = await second.post("/v1/billing/top-up", json={"amount_cents": 6000}, headers=keyed)
        assert_error(reused, 409, "idempotency_key_reused")
        assert await snapshot(state) == after


# -- probe: hook tracing keeps the Stripe secrets out of the log --------------------------------


async def test_hook_tracing_never_logs_the_stripe_secrets(
    make_state, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With BILLFOLD_TRACE_HOOKS=1 every hook call is logged, but never the Stripe secret key or
    the webhook secret."""
    secret_key, webhook_secret = "sk_test_SECRETVALUE123", "whsec_SECRETVALUE456"
    monkeypatch.setenv("BILLFOLD_TRACE_HOOKS", "1")
    # Litestar's logging set-up replaces the root handlers once the app starts (caplog's included):
    # listen on Billfold's and the Stripe SDK's loggers themselves.
    listened = [logging.getLogger(name) for name in ("billfold", "stripe")]
    for logger in listened:
        logger.addHandler(caplog.handler)
        monkeypatch.setattr(logger, "level", logging.DEBUG)
    overrides = {
        "plugins": {
            "stripe": {
                **STRIPE_OVERRIDES["plugins"]["stripe"],
                "secret_key": secret_key,
                "webhook_secret": webhook_secret,
            }
        }
    }
    app_state = make_state(overrides)
    try:
        async with open_client(app_state) as client:
            org_id, headers = await create_tenant(client, balance=1_000)
            charged = await client.post("/v1/billing/charges", json={"amount_cents": 10}, headers=headers)
            assert charged.status_code == 201, charged.text
            payload = stripe_event("evt_traced", org_id)
            delivered = await client.post(
                "/v1/stripe/webhook",
                content=payload,
                headers={"Stripe-Signature": sign(payload, webhook_secret)},
            )
            assert delivered.status_code == 200, delivered.text
    finally:
        for logger in listened:
            logger.removeHandler(caplog.handler)
        await app_state.engine.dispose()

    traced = [r.getMessage() for r in caplog.records if r.name == "billfold.plugins"]
    # The hooks of the requests were traced, not only those of the start-up.
    assert any("billfold_organization_created" in message for message in traced), traced[:5]
    assert any("billfold_provider_webhook" in message for message in traced), traced[:5]
    for record in caplog.records:
        logged = record.getMessage() + (record.exc_text or "")
        assert "SECRETVALUE" not in logged, (record.name, logged[:300])


# -- probe: the command line on a fresh database -----------------------------------------------


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *args, database_url=url)


def _one_clean_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


async def test_cli_commands_work_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    """orgs create, keys create, ledger adjust and ledger verify each migrate a SQLite file that
    does not exist yet, then do their work."""
    path = tmp_path / "fresh.db"
    url = f"sqlite+aiosqlite:///{path}"
    assert not path.exists()
    created = await cli("orgs", "create", "--name", "X", "--json", url=url)
    assert created.returncode == 0, created.stderr
    org = json.loads(created.stdout)
    uuid.UUID(org["id"])
    assert org["name"] == "X"
    assert {"organizations", "ledger_entries", "idempotency_keys"} <= _tables(path)

    for name in ("keys", "adjust", "verify"):
        fresh = tmp_path / f"fresh-{name}.db"
        fresh_url = f"sqlite+aiosqlite:///{fresh}"
        if name == "verify":
            result = await cli("ledger", "verify", url=fresh_url)
            assert result.returncode == 0, result.stderr
        else:
            # A fresh file has no organization: the command is migrated, runs, and says so in one line.
            command = (
                ("keys", "create", "--json")
                if name == "keys"
                else ("ledger", "adjust", "--amount-cents", "100", "--description", "x")
            )
            result = await cli(*command, "--org", str(uuid.uuid4()), url=fresh_url)
            assert result.returncode == 1, (result.stdout, result.stderr)
            assert "not" in _one_clean_line(result).lower()
        assert "ledger_entries" in _tables(fresh), name

    key = await cli("keys", "create", "--org", org["id"], "--json", url=url)
    assert key.returncode == 0, key.stderr
    assert json.loads(key.stdout)["api_key"].startswith("sk_test_")
    adjusted = await cli(
        "ledger", "adjust", "--org", org["id"], "--amount-cents", "700", "--description", "x", url=url
    )
    assert adjusted.returncode == 0, adjusted.stderr
    verified = await cli("ledger", "verify", url=url)
    assert verified.returncode == 0, verified.stderr


@pytest.mark.postgres
@postgres_only
async def test_cli_on_an_empty_postgres_database_asks_for_db_upgrade() -> None:
    """On an empty PostgreSQL database a command exits 1 with one line naming `billfold db
    upgrade` (no traceback); `billfold db upgrade` says what it applied; the command then works."""
    assert POSTGRES_URL is not None
    server = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    name = f"billfold_edges_{uuid.uuid4().hex[:10]}"
    url = server.rsplit("/", 1)[0] + f"/{name}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    await admin(f'CREATE DATABASE "{name}"')
    try:
        refused = await cli("orgs", "create", "--name", "X", "--json", url=url)
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        assert "billfold db upgrade" in _one_clean_line(refused)
        assert refused.stdout == ""

        upgraded = await cli("db", "upgrade", url=url)
        assert upgraded.returncode == 0, upgraded.stderr
        assert "core: empty -> " in upgraded.stdout, upgraded.stdout
        assert "(applied 0001, 0002" in upgraded.stdout, upgraded.stdout

        created = await cli("orgs", "create", "--name", "X", "--json", url=url)
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["name"] == "X"
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
