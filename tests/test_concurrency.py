"""Races over HTTP (the app runs in the test's loop, so asyncio.gather really interleaves the
requests; on PostgreSQL they contend for the same rows from many pooled connections)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from litestar import get

from billfold import hookimpl
from conftest import count_rows, minor_balance, open_client, run_cli, verify


class _SlowRoute:
    def __init__(self) -> None:
        self.active = 0
        self.peak = 0

    @hookimpl
    def billfold_routes(self, state: Any) -> list[Any]:
        @get("/v1/testplugin/slow")
        async def slow() -> dict[str, int]:
            self.active += 1
            self.peak = max(self.peak, self.active)
            await asyncio.sleep(0.05)
            self.active -= 1
            return {"peak": self.peak}

        return [slow]


async def test_the_harness_really_runs_requests_concurrently(state):
    """Guard for every race below: with a client that serialises requests they would prove nothing."""
    plugin = _SlowRoute()
    state.pm.register(plugin, name="slow-route")
    try:
        async with open_client(state) as client:
            responses = await asyncio.gather(*(client.get("/v1/testplugin/slow") for _ in range(10)))
    finally:
        state.pm.unregister(plugin)
    assert all(r.status_code == 200 for r in responses)
    assert plugin.peak == 10


async def test_concurrent_charges_never_overdraw(client, new_tenant, state, database_url):
    tenant = await new_tenant(balance=20000)
    entries_before = await count_rows(state, "ledger_entries")

    responses = await asyncio.gather(
        *(
            client.post(
                "/v1/billing/charges",
                json={"amount_cents": 1000, "description": f"race {i}"},
                headers=tenant.headers,
            )
            for i in range(50)
        )
    )

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 20, 402: 30}, statuses
    assert all(r.json()["code"] == "insufficient_funds" for r in responses if r.status_code == 402)
    # each success saw a distinct balance on its way down to zero
    afters = sorted(r.json()["balance"]["free"] for r in responses if r.status_code == 201)
    assert afters == list(range(0, 20000, 1000))
    balance = await minor_balance(client, tenant.headers)
    assert balance == {"free": 0, "reserved": 0, "total": 0, "currency": "usd"}
    assert await count_rows(state, "ledger_entries") == entries_before + 20
    assert await verify(state) == []

    # the operator's own check agrees, run as a separate process against the same database
    result = await asyncio.to_thread(run_cli, "ledger", "verify", database_url=database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ledger ok" in result.stdout


async def test_concurrent_charges_and_holds_share_the_free_balance(client, new_tenant, state):
    tenant = await new_tenant(balance=20000)
    requests = [
        client.post("/v1/billing/charges", json={"amount_cents": 1000}, headers=tenant.headers)
        for _ in range(20)
    ] + [
        client.post("/v1/billing/holds", json={"amount_cents": 1000}, headers=tenant.headers)
        for _ in range(20)
    ]
    responses = await asyncio.gather(*requests)
    ok = [r for r in responses if r.status_code == 201]
    assert len(ok) == 20
    assert {r.status_code for r in responses} == {201, 402}
    held = sum(1 for r in ok if "hold" in r.json())
    balance = await minor_balance(client, tenant.headers)
    assert balance["free"] == 0
    assert balance["reserved"] == 1000 * held
    assert balance["total"] == 1000 * held
    assert await verify(state) == []


async def test_capture_and_release_races_finalize_each_hold_once(client, new_tenant, state):
    tenant = await new_tenant(balance=10000)
    holds = []
    for _ in range(20):
        created = await client.post("/v1/billing/holds", json={"amount_cents": 100}, headers=tenant.headers)
        assert created.status_code == 201, created.text
        holds.append(created.json()["hold"]["id"])
    assert (await minor_balance(client, tenant.headers))["reserved"] == 2000

    async def attempt(hold_id: str, action: str, amount: int | None) -> tuple[str, str, Any]:
        body = {"amount_cents": amount} if amount is not None else None
        response = await client.post(
            f"/v1/billing/holds/{hold_id}/{action}", json=body, headers=tenant.headers
        )
        return hold_id, action, response

    attempts = []
    for hold_id in holds:
        for amount in (None, 40, 70):
            attempts.append(attempt(hold_id, "capture", amount))
        for _ in range(3):
            attempts.append(attempt(hold_id, "release", None))
    results = await asyncio.gather(*attempts)

    captured_total = 0
    outcome: dict[str, str] = {}
    for hold_id in holds:
        mine = [(action, response) for h, action, response in results if h == hold_id]
        winners = [(action, response) for action, response in mine if response.status_code == 200]
        assert len(winners) == 1, f"hold {hold_id} finalized {len(winners)} times"
        action, response = winners[0]
        final = "captured" if action == "capture" else "released"
        outcome[hold_id] = final
        assert response.json()["hold"]["status"] == final
        if final == "captured":
            captured_total += response.json()["hold"]["captured_cents"]
        for _, loser in mine:
            if loser is not response:
                assert loser.status_code == 409, loser.text
                assert loser.json()["code"] == f"hold_{final}"
        fetched = (await client.get(f"/v1/billing/holds/{hold_id}", headers=tenant.headers)).json()
        assert fetched["status"] == final

    balance = await minor_balance(client, tenant.headers)
    assert balance == {
        "free": 10000 - captured_total,
        "reserved": 0,
        "total": 10000 - captured_total,
        "currency": "usd",
    }
    # one hold entry per hold, one capture (+ release of the rest) or one release, never both
    transactions = (await client.get("/v1/billing/transactions?limit=200", headers=tenant.headers)).json()[
        "data"
    ]
    per_kind = Counter(t["kind"] for t in transactions)
    n_captured = sum(1 for v in outcome.values() if v == "captured")
    assert per_kind["hold"] == 20
    assert per_kind["capture"] == n_captured
    assert await verify(state) == []


async def test_concurrent_retries_with_one_idempotency_key_debit_once(client, new_tenant, state):
    tenant = await new_tenant(balance=5000)
    headers = {**tenant.headers, "Idempotency-Key": "same-charge"}
    responses = await asyncio.gather(
        *(
            client.post(
                "/v1/billing/charges", json={"amount_cents": 700, "description": "once"}, headers=headers
            )
            for _ in range(10)
        )
    )
    assert [r.status_code for r in responses] == [201] * 10, [
        r.text for r in responses if r.status_code != 201
    ]
    originals = [r for r in responses if r.headers.get("Idempotent-Replayed") != "true"]
    assert len(originals) == 1
    assert all(r.json() == originals[0].json() for r in responses)
    assert (await minor_balance(client, tenant.headers))["free"] == 4300
    assert await count_rows(state, "ledger_entries") == 2
    assert await verify(state) == []


async def test_concurrent_idempotent_race_with_a_different_body_conflicts(client, new_tenant, state):
    tenant = await new_tenant(balance=5000)
    headers = {**tenant.headers, "Idempotency-Key": "contested"}
    responses = await asyncio.gather(
        *(
            client.post("/v1/billing/charges", json={"amount_cents": 100 + (i % 2)}, headers=headers)
            for i in range(10)
        )
    )
    statuses = Counter(r.status_code for r in responses)
    assert statuses[201] >= 1
    assert set(statuses) <= {201, 409}
    winner = next(r for r in responses if r.status_code == 201).json()
    amount = -winner["transaction"]["amount_cents"]
    # every request with the winner's body replays it, every other one is a conflict
    for i, response in enumerate(responses):
        if 100 + (i % 2) == amount:
            assert response.status_code == 201
            assert response.json() == winner
        else:
            assert response.status_code == 409
            assert response.json()["code"] == "idempotency_key_reused"
    assert (await minor_balance(client, tenant.headers))["free"] == 5000 - amount
    assert await verify(state) == []


async def test_concurrent_charges_across_organizations_do_not_interfere(client, new_tenant, state):
    tenants = [await new_tenant(name=f"T{i}", balance=3000) for i in range(5)]
    responses = await asyncio.gather(
        *(
            client.post("/v1/billing/charges", json={"amount_cents": 500}, headers=t.headers)
            for t in tenants
            for _ in range(8)
        )
    )
    assert Counter(r.status_code for r in responses) == {201: 30, 402: 10}
    for t in tenants:
        assert (await minor_balance(client, t.headers))["free"] == 0
    assert await verify(state) == []
