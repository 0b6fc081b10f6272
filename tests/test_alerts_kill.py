"""At least once across a crash: `billfold worker` is killed with SIGKILL while deliveries are in
flight (the receiver holds each request); after a restart every due event is delivered — none
lost, a repeat carrying the same `webhook-id`. PostgreSQL (several workers share the queue with
SKIP LOCKED; a dead worker's claims come back when their lease ends)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from alerts_support import FAST, Receiver, migrate_alerts
from conftest import ROOT, config_text

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore::ResourceWarning")]

CRASHY = {**FAST, "lease_seconds": 3, "timeout_seconds": 2, "max_concurrency": 4, "max_per_endpoint": 2}
LEVELS = [1900, 1800, 1700, 1600, 1500, 1400, 1300, 1200, 1100, 1000]


@pytest.fixture
def config_overrides(database_url: str, is_postgres: bool) -> dict[str, Any]:
    if not is_postgres:
        pytest.skip("needs PostgreSQL (BILLFOLD_TEST_POSTGRES_URL)")
    migrate_alerts(database_url)
    return {"plugins": {"alerts": CRASHY}}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver(hold_seconds=1.0).start()
    yield started
    started.stop()
    assert started.failures == [], started.failures


async def statuses(state: Any) -> dict[str, int]:
    async with state.engine.connect() as conn:
        rows = await conn.execute(text("SELECT status, count(*) FROM alerts_deliveries GROUP BY status"))
        return {row[0]: int(row[1]) for row in rows}


async def start_worker(config: Path, database_url: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "BILLFOLD_CONFIG": str(config),
        "BILLFOLD_DATABASE_URL": database_url.replace("postgresql+asyncpg://", "postgresql://"),
    }
    env.pop("BILLFOLD_PLUGINS", None)
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "billfold"),
        "worker",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_kill_9_mid_delivery_loses_nothing(client, state, new_tenant, receiver, database_url, tmp_path):
    for name in ("A", "B"):
        tenant = await new_tenant(balance=2000, name=name)
        hook = await client.post(
            "/v1/webhooks",
            json={"url": receiver.url, "events": ["billing.balance_low"]},
            headers=tenant.headers,
        )
        assert hook.status_code == 201, hook.text
        receiver.secrets_by_org[tenant.org_id] = [hook.json()["secret"]]
        put = await client.put("/v1/billing/alerts", json={"thresholds": LEVELS}, headers=tenant.headers)
        assert put.status_code == 200, put.text
        charged = await client.post(
            "/v1/billing/charges", json={"amount_cents": 1500}, headers=tenant.headers
        )
        assert charged.status_code == 201, charged.text
    assert await statuses(state) == {"pending": 20}

    config = tmp_path / "billing.yaml"
    config.write_text(config_text({"plugins": {"alerts": CRASHY}}, database_url=database_url))
    worker = await start_worker(config, database_url)
    try:
        deadline = time.monotonic() + 60
        while len(receiver.received) < 3:
            assert time.monotonic() < deadline, "the worker sent nothing"
            await asyncio.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    killed_at = len(receiver.received)
    assert (await statuses(state)).get("pending", 0) > 0  # in flight when it died: still owed

    restarted = await start_worker(config, database_url)
    try:
        deadline = time.monotonic() + 90
        while (await statuses(state)).get("delivered", 0) < 20:
            assert time.monotonic() < deadline, await statuses(state)
            await asyncio.sleep(0.2)
    finally:
        restarted.send_signal(signal.SIGKILL)
        await restarted.wait()

    async with state.engine.connect() as conn:
        owed = {row[0] for row in await conn.execute(text("SELECT event_id FROM alerts_deliveries"))}
    received = [r.headers["webhook-id"] for r in receiver.received]
    assert len(owed) == 20
    assert owed <= set(received)  # every event arrived at least once
    assert set(received) == owed  # and nothing else did
    assert len(received) >= 20 and killed_at >= 3
    for request in receiver.received:  # a repeat is the same event: same id, same body
        assert request.json["id"] == request.headers["webhook-id"]
