"""The alerts plugin's metrics at GET /metrics (behind the operator key): delivery attempts by
outcome, counted as real receivers answer them, and the queue (pending deliveries by their
endpoint's status, the backlog's age) read from the database at each scrape."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from alerts_support import FAST, Receiver, deliver, deliver_until, migrate_alerts
from conftest import assert_error
from test_alerts import charge, deliveries, endpoint, levels
from test_metrics import Samples, parse, scrape, serving_two_workers, value

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

COUNTER = "billfold_webhook_deliveries_total"
PENDING = "billfold_webhook_deliveries_pending"
OLDEST = "billfold_webhook_deliveries_oldest_due_seconds"
OUTCOMES = ("delivered", "retrying", "failed", "gone", "superseded")


@pytest.fixture
def config_overrides(database_url: str) -> dict[str, Any]:
    migrate_alerts(database_url)
    return {"plugins": {"alerts": dict(FAST)}}


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Receivers on 127.0.0.1, each answering ``status`` unless told otherwise."""
    started: list[Receiver] = []

    def start(status: int = 200) -> Receiver:
        receiver = Receiver(default=(status, {})).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()
        assert receiver.failures == [], receiver.failures


def counted(before: Samples, after: Samples) -> dict[str, float]:
    """What the counter gained between two scrapes, by outcome (the counter lives as long as the
    test process)."""
    return {o: value(after, COUNTER, outcome=o) - value(before, COUNTER, outcome=o) for o in OUTCOMES}


async def test_attempts_are_counted_by_outcome(client, state, tenant, receivers) -> None:
    ok, broken, gone = receivers(200), receivers(500), receivers(410)
    good_hook = await endpoint(client, tenant, ok)
    broken_hook = await endpoint(client, tenant, broken)
    gone_hook = await endpoint(client, tenant, gone)
    before = await scrape(client)
    assert all((COUNTER, frozenset({("outcome", o)})) in before for o in OUTCOMES)  # 0 until counted
    assert value(before, PENDING, endpoint="enabled") == 0
    assert value(before, "billfold_metrics_source_up", source="alerts") == 1

    sent = await client.post(f"/v1/webhooks/{good_hook['id']}/test", headers=tenant.headers)
    assert sent.json()["status"] == "delivered", sent.text
    failing = await client.post(f"/v1/webhooks/{broken_hook['id']}/test", headers=tenant.headers)
    assert failing.json()["status"] == "pending", failing.text
    first = await scrape(client)
    assert counted(before, first) == {
        "delivered": 1,
        "retrying": 1,
        "failed": 0,
        "gone": 0,
        "superseded": 0,
    }
    assert value(first, PENDING, endpoint="enabled") == 1  # the failing one, retried in 0.2 s
    assert value(first, PENDING, endpoint="disabled") == 0

    await deliver_until(state, lambda: len(broken.received) >= 5)  # 4 retries, then it gives up
    refused = await client.post(f"/v1/webhooks/{gone_hook['id']}/test", headers=tenant.headers)
    assert refused.json()["status"] == "failed", refused.text
    assert_error(await client.post(f"/v1/webhooks/{gone_hook['id']}/test", headers=tenant.headers), 422)
    after = await scrape(client)
    assert counted(before, after) == {
        "delivered": 1,
        "retrying": 4,
        "failed": 1,
        "gone": 1,
        "superseded": 0,
    }
    assert [len(r.received) for r in (ok, broken, gone)] == [1, 5, 1]  # one count per attempt made
    assert value(after, PENDING, endpoint="enabled") == 0
    assert value(after, OLDEST) == 0


async def test_pending_deliveries_and_the_backlog(client, state, new_tenant, receivers) -> None:
    receiver = receivers(200)
    tenant = await new_tenant(balance=1200)
    hook = await endpoint(client, tenant, receiver, ["billing.balance_low"])
    await levels(client, tenant, [1000])
    before = await scrape(client)

    await charge(client, tenant, 300)  # crosses 1000: queued, no worker runs in the tests
    await asyncio.sleep(0.5)
    queued = await scrape(client)
    assert value(queued, PENDING, endpoint="enabled") == 1
    assert 0.5 <= value(queued, OLDEST) < 30

    disabled = await client.patch(
        f"/v1/webhooks/{hook['id']}", json={"status": "disabled"}, headers=tenant.headers
    )
    assert disabled.status_code == 200, disabled.text
    parked = await scrape(client)
    assert (value(parked, PENDING, endpoint="enabled"), value(parked, PENDING, endpoint="disabled")) == (0, 1)
    assert value(parked, OLDEST) == 0  # a disabled endpoint's deliveries wait: no backlog
    await deliver(state)
    assert receiver.received == []

    enabled = await client.patch(
        f"/v1/webhooks/{hook['id']}", json={"status": "enabled"}, headers=tenant.headers
    )
    assert enabled.status_code == 200, enabled.text
    await deliver(state)
    (sent,) = await deliveries(client, tenant, hook)
    assert sent["status"] == "delivered"
    after = await scrape(client)
    assert counted(before, after)["delivered"] == 1
    assert (value(after, PENDING, endpoint="enabled"), value(after, PENDING, endpoint="disabled")) == (0, 0)
    assert value(after, OLDEST) == 0


# -- several workers ---------------------------------------------------------------------------------------

ROUND = 10


def delivered_per_worker(shared: Path) -> dict[int, float]:
    """Delivered attempts in each worker's own file (``counter_<pid>.db``)."""
    found: dict[int, float] = {}
    for path in shared.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, count, *_ in MmapedDict.read_all_values_from_file(str(path)):
            if f'"{COUNTER}"' in key and '"delivered"' in key:
                found[pid] = found.get(pid, 0) + count
    return found


def test_two_workers_sum_their_attempts(database_url: str, tmp_path: Path, receivers) -> None:
    """`billfold serve --workers 2`: each worker counts the attempts it makes (here the first
    attempt of POST /v1/webhooks/{id}/test, made by the worker that answers), and a scrape answered
    by either worker shows the sum."""
    receiver = receivers(200)
    shared = tmp_path / "multiproc"
    shared.mkdir()
    admin_key = "alerts_metrics_key"
    admin = {"Authorization": f"Bearer {admin_key}"}
    with serving_two_workers(tmp_path, database_url, admin_key, shared) as base:
        created = httpx.post(f"{base}/v1/admin/organizations", json={"name": "Workers"}, headers=admin)
        assert created.status_code == 201, created.text
        tenant = {"Authorization": f"Bearer {created.json()['api_key']}", "Connection": "close"}
        hook = httpx.post(f"{base}/v1/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=tenant)
        assert hook.status_code == 201, hook.text
        receiver.secrets.append(hook.json()["secret"])

        async def test_round() -> None:
            async def one() -> None:
                async with httpx.AsyncClient(base_url=base, timeout=30) as client:  # its own connection
                    answer = await client.post(f"/v1/webhooks/{hook.json()['id']}/test", headers=tenant)
                    assert answer.status_code == 200 and answer.json()["status"] == "delivered", answer.text

            await asyncio.gather(*[one() for _ in range(ROUND)])

        sent = 0
        per_worker: dict[int, float] = {}
        for _ in range(10):
            asyncio.run(test_round())
            sent += ROUND
            per_worker = delivered_per_worker(shared)
            if len([n for n in per_worker.values() if n > 0]) >= 2:
                break
        assert len(receiver.received) == sent
        assert len([n for n in per_worker.values() if n > 0]) == 2, per_worker  # both workers sent
        assert sum(per_worker.values()) == sent
        scraped = {
            value(
                parse(httpx.get(f"{base}/metrics", headers=admin, timeout=30).text),
                COUNTER,
                outcome="delivered",
            )
            for _ in range(6)
        }
        assert scraped == {sent}  # whichever worker answered
