"""Usage under concurrency (the requests interleave in the test's loop; on PostgreSQL they contend
from many pooled connections), the carried fraction as a property, and month close run by
several closers at once and after a crash."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import sys
import textwrap
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billfold import clock, hookimpl
from billfold.usage.pricing import rounded
from conftest import ADMIN, ROOT, count_rows, minor_balance, verify


def event(n: int | str, channel: str = "sms", quantity: int = 1, **extra: Any) -> dict[str, Any]:
    return {"channel": channel, "quantity": quantity, "event_id": f"evt-{n}", **extra}


# -- the carry, as a property ---------------------------------------------------------------------


class Carry:
    """The arithmetic of ``carry_charge`` (billfold.usage.pricing) on one (org, channel, currency)."""

    def __init__(self) -> None:
        self.exact = Decimal(0)
        self.charged = 0

    def charge(self, exact: Decimal) -> int:
        self.exact += exact
        amount = rounded(self.exact) - self.charged
        self.charged += amount
        return amount


prices = st.decimals(
    min_value=Decimal(0), max_value=Decimal(50), places=4, allow_nan=False, allow_infinity=False
)


@settings(max_examples=300, deadline=None)
@given(
    channel_prices=st.lists(prices, min_size=1, max_size=3),
    sends=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40)), min_size=1, max_size=200),
)
def test_no_drift_over_prices_counts_and_interleavings(channel_prices, sends):
    """Events on several channels, interleaved in any order with any quantities: every single charge
    is a whole, non-negative number of minor units, and each channel's running total is always
    round(units x price)."""
    carries = [Carry() for _ in channel_prices]
    units = [0] * len(channel_prices)
    for which, quantity in sends:
        which %= len(channel_prices)
        amount = carries[which].charge(channel_prices[which] * quantity)
        assert isinstance(amount, int) and amount >= 0
        units[which] += quantity
        for c, carry in enumerate(carries):
            expected = (channel_prices[c] * units[c]).to_integral_value(rounding=ROUND_HALF_UP)
            assert carry.charged == expected


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    price=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(3), places=4),
    quantities=st.lists(st.integers(0, 5), min_size=1, max_size=12),
)
async def test_the_database_carry_matches_the_arithmetic(state, price, quantities):
    """The stored carry (usage_carry, through carry_charge in a transaction) charges exactly what the
    arithmetic says, event after event, on SQLite and PostgreSQL alike."""
    from billfold.usage.pricing import carry_charge

    org, _ = await state.orgs.create_with_key(name="carry")
    model = Carry()
    for quantity in quantities:
        async with state.db.transaction() as conn:
            charged = await carry_charge(conn, org.id, "sms", "usd", price * quantity)
        assert charged == model.charge(price * quantity)


# -- on PostgreSQL, under concurrency ---------------------------------------------------------------


async def test_racing_events_against_a_cap_accept_exactly_the_cap(client, new_tenant, state):
    tenant = await new_tenant(balance=100_000)
    response = await client.put(
        f"/v1/admin/organizations/{tenant.org_id}/plan", json={"messages_cap": 20}, headers=ADMIN
    )
    assert response.status_code == 200
    responses = await asyncio.gather(
        *(client.post("/v1/usage", json=event(n, "email"), headers=tenant.headers) for n in range(50))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 20 and statuses.count(402) == 30
    assert {r.json()["code"] for r in responses if r.status_code == 402} == {"messages_cap_exceeded"}
    plan = (await client.get(f"/v1/admin/organizations/{tenant.org_id}/plan", headers=ADMIN)).json()
    assert plan["counters"]["messages"] == 20
    assert await count_rows(state, "usage_events") == 20


async def test_racing_events_against_a_balance_of_twenty_accept_twenty(client, new_tenant, state):
    tenant = await new_tenant(balance=160)  # 20 one-minute calls at 8 cents
    responses = await asyncio.gather(
        *(client.post("/v1/usage", json=event(n, "call", 60), headers=tenant.headers) for n in range(50))
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 20 and statuses.count(402) == 30
    assert (await minor_balance(client, tenant.headers))["free"] == 0
    assert await verify(state) == []


async def test_racing_repeats_of_one_event_id_debit_once(client, new_tenant, state):
    tenant = await new_tenant(balance=1000)
    responses = await asyncio.gather(
        *(client.post("/v1/usage", json=event("same", "call", 60), headers=tenant.headers) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201]
    assert len({r.json()["usage_id"] for r in responses}) == 1
    assert (await minor_balance(client, tenant.headers))["free"] == 992
    assert await verify(state) == []


async def test_concurrent_fractional_events_do_not_drift(client, new_tenant, state):
    tenant = await new_tenant(balance=100_000)
    responses = await asyncio.gather(
        *(client.post("/v1/usage", json=event(n), headers=tenant.headers) for n in range(200))
    )
    assert all(r.status_code == 201 for r in responses)
    assert sum(r.json()["billing"]["amount_cents"] for r in responses) == 158  # round(200 x 0.79)
    assert (await minor_balance(client, tenant.headers))["free"] == 100_000 - 158
    assert await verify(state) == []


# -- month close ------------------------------------------------------------------------------------


async def test_two_closers_at_once_close_each_organization_month_once(make_state, new_tenant, state):
    closed: list[Any] = []

    class SlowRecorder:
        @hookimpl
        async def billfold_month_close(self, conn: Any, org_id: Any, period: str) -> None:
            closed.append(org_id)
            await asyncio.sleep(0.05)  # both closers are inside a close at the same time

    tenants = [await new_tenant(name=f"org {n}") for n in range(6)]
    period = f"{clock.now().year:04d}-{clock.now().month:02d}"
    clock.set_offset(datetime.timedelta(days=32))
    other = make_state()
    for app in (state, other):
        app.pm.register(SlowRecorder(), name="slow-recorder")
    try:
        first, second = await asyncio.gather(state.month_close.close(period), other.month_close.close(period))
    finally:
        await other.engine.dispose()
    assert sorted(map(str, closed)) == sorted(t.org_id for t in tenants)
    assert len(first.closed) + len(second.closed) == 6
    assert await count_rows(state, "month_closes") == 6


CRASHING_CLOSER = textwrap.dedent(
    """
    import asyncio, sys, time
    from billfold import hookimpl
    from billfold.api.app import build

    class Stall:
        def __init__(self):
            self.seen = 0

        @hookimpl
        async def billfold_month_close(self, conn, org_id, period):
            self.seen += 1
            print(f"closing {org_id}", flush=True)
            if self.seen == 2:
                time.sleep(600)  # killed here, inside the second organization's transaction

    async def main():
        app = build()
        app.pm.register(Stall(), name="stall")
        await app.clock.load()
        await app.month_close.close(sys.argv[1])

    asyncio.run(main())
    """
)


async def test_a_close_killed_half_way_is_finished_by_the_next_run(new_tenant, state, database_url, tmp_path):
    tenants = [await new_tenant(name=f"org {n}") for n in range(3)]
    period = f"{clock.now().year:04d}-{clock.now().month:02d}"
    await state.clock.advance(datetime.timedelta(days=32))  # the subprocess reads it from the database
    script = tmp_path / "closer.py"
    script.write_text(CRASHING_CLOSER)
    env = {
        **os.environ,
        "BILLFOLD_DATABASE_URL": database_url,
        "BILLFOLD_CONFIG": str(ROOT / "config" / "billing.yaml"),
    }
    closer = await asyncio.create_subprocess_exec(
        sys.executable, str(script), period, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert closer.stdout is not None
    lines = [
        (await asyncio.wait_for(closer.stdout.readline(), 60)).decode(),
        (await asyncio.wait_for(closer.stdout.readline(), 60)).decode(),
    ]
    assert all(line.startswith("closing ") for line in lines), lines
    closer.send_signal(signal.SIGKILL)
    await asyncio.wait_for(closer.wait(), 30)

    assert await count_rows(state, "month_closes") == 1  # the first committed; the second died with it
    report = await state.month_close.close(period)
    assert len(report.closed) == 2 and report.already == 1
    assert await count_rows(state, "month_closes") == 3
    assert {str(t) for t in report.closed} | {lines[0].split()[1]} == {t.org_id for t in tenants}


def test_cli_month_close(tmp_path: Path) -> None:
    """`billfold month close` refuses a month that has not ended, in one line."""
    from conftest import run_cli

    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    refused = run_cli("month", "close", "--period", "2999-01", database_url=url)
    assert refused.returncode == 1 and "has not ended" in refused.stderr
    assert "Traceback" not in refused.stderr
    done = run_cli("month", "close", "--period", "2020-01", "--json", database_url=url)
    assert done.returncode == 0, done.stderr
    assert '"closed": []' in done.stdout


@pytest.fixture(autouse=True)
def _no_business_time_leak() -> Any:
    yield
    clock.set_offset(datetime.timedelta(0))
