"""POST /v1/usage/batch against the same events sent one by one, on SQLite and on PostgreSQL.

A batch of plain events is priced and checked in memory and written at once; a batch in which an
event is refused after it was priced (the balance, a cap) runs again one event at a time. Either
way each event's answer, the balances, the carried fractions, the counters, the tier volume and the
reports must be what the same events sent one by one give."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
from advanced_alchemy.types import GUID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, text

from alerts_support import alerts_config, deliver
from conftest import ADMIN, minor_balance, verify

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

VOLATILE = {"usage_id", "id", "created_at", "entry_id", "hold_id"}


config_overrides = alerts_config


def stable(value: Any) -> Any:
    """An answer without what differs between two organizations (ids, times)."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


async def one_by_one(client, tenant, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event alone, answered the way a batch answers it."""
    answers = []
    for body in events:
        response = await client.post("/v1/usage", json=body, headers=tenant.headers)
        if response.status_code in (200, 201):
            out = response.json()
            status = "replayed" if response.status_code == 200 else "accepted"
            answers.append({"event_id": body["event_id"], "status": status, "billing": out["billing"]})
        else:
            answers.append(
                {"event_id": body["event_id"], "status": "refused", "code": response.json()["code"]}
            )
    return answers


async def batched(client, tenant, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = await client.post("/v1/usage/batch", json={"events": events}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    answers = []
    for result in response.json()["results"]:
        answer = {"event_id": result["event_id"], "status": result["status"]}
        if result["status"] == "refused":
            answer["code"] = result["code"]
        else:
            answer["billing"] = result["billing"]
        answers.append(answer)
    return answers


@contextlib.contextmanager
def statements(state) -> Iterator[list[str]]:
    """The SQL statements the app runs meanwhile."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sqlalchemy.event.listen(state.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sqlalchemy.event.remove(state.engine.sync_engine, "before_cursor_execute", record)


async def state_of(client, state, tenant) -> dict[str, Any]:
    """What the events left: balances, carried fractions, cycle counters, daily rollups, tier volume."""
    async with state.engine.connect() as conn:

        async def rows(sql: str) -> list[tuple[Any, ...]]:
            statement = text(sql).bindparams(bindparam("org", type_=GUID()))
            result = await conn.execute(statement, {"org": uuid.UUID(tenant.org_id)})
            return sorted(tuple(str(v) for v in row) for row in result.all())

        org = ":org"
        found = {
            "balance": await minor_balance(client, tenant.headers),
            "carry": await rows(
                f"SELECT channel, currency, exact_total, charged_cents FROM usage_carry WHERE org_id = {org}"
            ),
            "counters": await rows(f"SELECT counter, value, warned FROM usage_counters WHERE org_id = {org}"),
            "daily": await rows(
                "SELECT channel, message_type, category, events, quantity, billed_quantity, amount_cents "
                f"FROM usage_daily WHERE org_id = {org}"
            ),
            "tiers": await rows(f"SELECT channel, step, volume FROM tiers_months WHERE org_id = {org}"),
            "events": await rows(
                "SELECT event_id, channel, quantity, billed_quantity, amount_cents, status "
                f"FROM usage_events WHERE org_id = {org}"
            ),
        }
    return found


async def twins(new_tenant, balance: int) -> tuple[Any, Any]:
    return await new_tenant(balance=balance, name="Batch"), await new_tenant(balance=balance, name="Alone")


MIXED = [
    {"channel": "sms", "quantity": 1, "event_id": "a"},
    {"channel": "call", "quantity": 61, "event_id": "b"},
    {"channel": "call", "quantity": 30, "event_id": "c", "message_type": "pro"},
    {"channel": "email", "quantity": 7, "event_id": "d", "category": "newsletter"},
    {"channel": "rcs", "quantity": 1, "event_id": "e", "message_type": "single"},
    {"channel": "sms", "quantity": 1, "event_id": "a"},  # a repeat in the batch: replayed
    {"channel": "sms", "quantity": 2, "event_id": "a"},  # another body: 409 in the batch
    {"channel": "fax", "quantity": 1, "event_id": "f"},  # unknown channel
    {"channel": "rcs", "quantity": 1, "event_id": "g", "message_type": "hologram"},  # unknown type
    {"channel": "push", "quantity": 3, "event_id": "h"},  # free
    *({"channel": "sms", "quantity": 1, "event_id": f"s{i}"} for i in range(40)),
]


async def test_a_mixed_batch_answers_as_the_events_sent_one_by_one(client, new_tenant, state):
    batch_org, alone_org = await twins(new_tenant, 10_000)
    # One event reported before the batch: the batch replays it.
    for org in (batch_org, alone_org):
        first = await client.post("/v1/usage", json=MIXED[1], headers=org.headers)
        assert first.status_code == 201, first.text

    with statements(state) as ran:
        got = await batched(client, batch_org, MIXED)
    # Written at once: no savepoint, and per priced event only the tiers plugin's statement (sms,
    # email and rcs have ladders) beside a fixed number for the whole batch (some 16, and the
    # plugin's three statements to start each ladder's month on first use).
    assert not any("SAVEPOINT" in sql.upper() for sql in ran)
    priced = sum(a["status"] == "accepted" for a in got)
    assert len(ran) <= priced + 16 + 3 * 3, "\n".join(s[:90].replace("\n", " ") for s in ran)
    expected = await one_by_one(client, alone_org, MIXED)
    assert stable(got) == stable(expected)
    assert [a["status"] for a in got[:10]] == [
        "accepted",
        "replayed",
        "accepted",
        "accepted",
        "accepted",
        "replayed",
        "refused",
        "refused",
        "refused",
        "accepted",
    ]
    assert [a.get("code") for a in got[6:9]] == [
        "event_id_conflict",
        "unknown_channel",
        "unknown_message_type",
    ]
    # Every charge is whole, the sms carry never drifts, the balance after each event follows on.
    sms = [
        a["billing"]["amount_cents"]
        for a in got
        if a["status"] == "accepted" and a["billing"]["channel"] == "sms"
    ]
    assert len(sms) == 41 and set(sms) <= {0, 1}
    assert sum(sms) == 32  # round(41 x 0.79) = round(32.39)
    left = await state_of(client, state, batch_org)
    assert left == await state_of(client, state, alone_org)
    assert all(left[part] for part in ("carry", "counters", "daily", "tiers", "events"))
    assert await verify(state) == []

    # The batch again: everything is a replay (or the same refusal), nothing moves.
    before = await state_of(client, state, batch_org)
    again = await batched(client, batch_org, MIXED)
    assert [a["status"] for a in again] == [
        "refused" if a["status"] == "refused" else "replayed" for a in got
    ]
    assert stable([a.get("billing") for a in again]) == stable([a.get("billing") for a in got])
    assert await state_of(client, state, batch_org) == before


async def test_a_batch_that_runs_out_of_money_refuses_the_rest_and_counts_only_what_it_charged(
    client, new_tenant, state
):
    batch_org, alone_org = await twins(new_tenant, 20)
    events = [{"channel": "call", "quantity": 60, "event_id": f"c{i}"} for i in range(5)] + [
        {"channel": "sms", "quantity": 1, "event_id": f"s{i}"} for i in range(10)
    ]
    with statements(state) as ran:
        got = await batched(client, batch_org, events)
    # The third call was refused after it was priced: the batch ran again, one savepoint an event.
    assert sum("SAVEPOINT" in sql.upper() and "RELEASE" not in sql.upper() for sql in ran) >= len(events) - 1
    expected = await one_by_one(client, alone_org, events)
    assert stable(got) == stable(expected)
    assert [a["status"] for a in got[:3]] == ["accepted", "accepted", "refused"]
    assert got[2]["code"] == "insufficient_funds"
    after = await state_of(client, state, batch_org)
    assert after == await state_of(client, state, alone_org)
    assert after["balance"]["free"] == 20 - 16 - sum(
        a["billing"]["amount_cents"] for a in got[5:] if a["status"] == "accepted"
    )
    # The tier volume counts the sms the batch charged, not the refused ones.
    assert after["tiers"] == [("sms", "standard", str(sum(a["status"] == "accepted" for a in got[5:])))]
    assert await verify(state) == []


async def test_a_batch_stops_at_the_messages_cap_as_single_events_do(client, new_tenant, state):
    batch_org, alone_org = await twins(new_tenant, 10_000)
    for org in (batch_org, alone_org):
        response = await client.put(
            f"/v1/admin/organizations/{org.org_id}/plan", json={"messages_cap": 5}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
    events = [{"channel": "email", "quantity": 2, "event_id": f"m{i}"} for i in range(4)]
    got = await batched(client, batch_org, events)
    assert stable(got) == stable(await one_by_one(client, alone_org, events))
    assert [a.get("code") for a in got] == [None, None, "messages_cap_exceeded", "messages_cap_exceeded"]
    assert await state_of(client, state, batch_org) == await state_of(client, state, alone_org)


async def test_a_batch_crossing_a_watched_level_announces_it_once(client, new_tenant, state, receiver):
    tenant = await new_tenant(balance=1040)
    hook = await client.post(
        "/v1/webhooks", json={"url": receiver.url, "events": ["billing.balance_low"]}, headers=tenant.headers
    )
    assert hook.status_code == 201, hook.text
    receiver.secrets.append(hook.json()["secret"])
    events = [{"channel": "call", "quantity": 60, "event_id": f"c{i}"} for i in range(10)]
    got = await batched(client, tenant, events)
    assert [a["billing"]["balance"]["free"] for a in got] == [1040 - 8 * n for n in range(1, 11)]
    await deliver(state)
    low = receiver.events("billing.balance_low")
    assert [e["data"]["threshold_cents"] for e in low] == [1000]
    assert low[0]["data"]["balance"]["free_cents"] == 1040 - 8 * 6  # the event that went below 1000
    assert await verify(state) == []


async def test_a_batch_with_a_reserved_send_runs_one_event_at_a_time(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    events = [
        {"channel": "call", "quantity": 60, "event_id": "r", "reserve": True},
        {"channel": "sms", "quantity": 1, "event_id": "s"},
    ]
    got = await batched(client, tenant, events)
    assert [a["status"] for a in got] == ["accepted", "accepted"]
    assert (await minor_balance(client, tenant.headers)) == {
        "free": 1000 - 8 - 1,
        "reserved": 8,
        "total": 1000 - 1,
        "currency": "usd",
    }


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["sms", "email", "call", "rcs", "fax"]),
        st.integers(min_value=0, max_value=130),
        st.integers(min_value=0, max_value=12),  # event ids repeat
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=EVENTS, balance=st.integers(min_value=0, max_value=300))
async def test_any_batch_leaves_what_the_same_events_one_by_one_leave(
    client, new_tenant, state, spec, balance
):
    batch_org, alone_org = await twins(new_tenant, balance)
    events = [
        {"channel": channel, "quantity": quantity, "event_id": f"e{ident}"}
        for channel, quantity, ident in spec
    ]
    got = await batched(client, batch_org, events)
    assert stable(got) == stable(await one_by_one(client, alone_org, events))
    assert await state_of(client, state, batch_org) == await state_of(client, state, alone_org)


async def tier_changes(state, tenant) -> list[dict[str, Any]]:
    async with state.engine.connect() as conn:
        statement = text(
            "SELECT payload FROM outbox_events WHERE type = 'tier.changed' AND org_id = :org ORDER BY id"
        ).bindparams(bindparam("org", type_=GUID()))
        rows = await conn.execute(statement, {"org": uuid.UUID(tenant.org_id)})
        return [p if isinstance(p, dict) else json.loads(p) for p in rows.scalars()]


async def test_a_batch_crossing_a_tier_threshold_prices_as_one_by_one(client, new_tenant, state):
    batch_org, alone_org = await twins(new_tenant, 100_000)
    events = [
        {"channel": "sms", "quantity": 9_998, "event_id": "bulk"},
        {"channel": "email", "quantity": 3, "event_id": "mail"},
        *({"channel": "sms", "quantity": 1, "event_id": f"s{i}"} for i in range(4)),
        {"channel": "rcs", "quantity": 2, "event_id": "r", "message_type": "basic"},
    ]
    with statements(state) as ran:
        got = await batched(client, batch_org, events)
    # One statement per tiered channel, not one per event (twice here: a new month's row is made
    # after the first finds none).
    assert sum(sql.startswith("UPDATE tiers_months SET volume") for sql in ran) == 3 * 2
    assert stable(got) == stable(await one_by_one(client, alone_org, events))
    sms = [a["billing"] for a in got if a["billing"]["channel"] == "sms"]
    # units 1..10,000 at the first price; the event that reaches 10,000 moves the step for the next
    assert [b["unit_price"] for b in sms] == ["0.79", "0.79", "0.79", "0.69", "0.69"]
    assert [b["tier"]["current"] for b in sms] == ["standard", "standard", "growth", "growth", "growth"]
    assert [b["tier"]["volume_used"] for b in sms] == [9_998, 9_999, 10_000, 10_001, 10_002]
    assert await state_of(client, state, batch_org) == await state_of(client, state, alone_org)
    changes = await tier_changes(state, batch_org)
    assert changes == await tier_changes(state, alone_org)
    assert [(c["channel"], c["from"], c["to"]) for c in changes] == [("sms", "standard", "growth")]
    assert await verify(state) == []


async def test_a_batch_refused_after_pricing_leaves_the_tier_volume_as_one_by_one(client, new_tenant, state):
    """The batch's tier statement counted every sms; the refusal rolls it back and the batch runs
    one event at a time: only the charged sms count, and no step moved on a refused event."""
    batch_org, alone_org = await twins(new_tenant, 7_902)
    events = [
        {"channel": "sms", "quantity": 9_999, "event_id": "bulk"},  # 7,899.21 cents: 7,899
        *({"channel": "sms", "quantity": 1, "event_id": f"s{i}"} for i in range(6)),
    ]
    got = await batched(client, batch_org, events)
    assert stable(got) == stable(await one_by_one(client, alone_org, events))
    assert "refused" in [a["status"] for a in got]
    left = await state_of(client, state, batch_org)
    assert left == await state_of(client, state, alone_org)
    accepted_units = sum(e["quantity"] for e, a in zip(events, got, strict=True) if a["status"] == "accepted")
    assert left["tiers"] == [
        ("sms", "growth" if accepted_units >= 10_000 else "standard", str(accepted_units))
    ]
    assert await tier_changes(state, batch_org) == await tier_changes(state, alone_org)


async def test_racing_batches_against_a_balance_of_twenty_calls_accept_twenty(client, new_tenant, state):
    """Ten batches of ten one-minute calls at once against 160 cents: exactly twenty are charged,
    whatever the order (on PostgreSQL the batches really run at once, on pooled connections)."""
    tenant = await new_tenant(balance=160)
    batches = [
        [{"channel": "call", "quantity": 60, "event_id": f"b{b}-{n}"} for n in range(10)] for b in range(10)
    ]
    answers = await asyncio.gather(*(batched(client, tenant, events) for events in batches))
    statuses = [a["status"] for answer in answers for a in answer]
    assert statuses.count("accepted") == 20 and statuses.count("refused") == 80
    assert {a["code"] for answer in answers for a in answer if a["status"] == "refused"} == {
        "insufficient_funds"
    }
    assert (await minor_balance(client, tenant.headers))["free"] == 0
    assert await verify(state) == []


async def test_racing_repeats_of_one_batch_debit_once(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    events = [{"channel": "sms", "quantity": 1, "event_id": f"s{n}"} for n in range(30)]
    answers = await asyncio.gather(*(batched(client, tenant, events) for _ in range(8)))
    firsts = [answer for answer in answers if answer[0]["status"] == "accepted"]
    assert len(firsts) == 1
    assert all(a["status"] == "accepted" for a in firsts[0])
    assert all(a["status"] == "replayed" for answer in answers if answer is not firsts[0] for a in answer)
    assert all(
        stable(answer) == stable(firsts[0])
        for answer in [[{**a, "status": "accepted"} for a in x] for x in answers]
    )
    assert (await minor_balance(client, tenant.headers))["free"] == 1000 - 24  # round(30 x 0.79)
    state_now = await state_of(client, state, tenant)
    assert len(state_now["events"]) == 30
    assert await verify(state) == []
