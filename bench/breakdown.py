"""Where the CPU of one Billfold charge goes: sequential, in-process measurements on PostgreSQL.

    uv run python bench/breakdown.py [--n 3000]

A diagnostic companion to bench/run.py (which measures over HTTP under load). Everything here runs
in this one process on uvloop, one request at a time, and reports the *client-side CPU time* per
operation (time.process_time, so waiting for PostgreSQL or for a busy machine does not count):

  * ASGI: POST /v1/billing/charges straight into the Litestar apps (no socket, no uvicorn), for
    Billfold as configured (the single-statement charge), with an Idempotency-Key (the
    transaction), with every key-cache lookup missing, with rate limits off; and
    bench/minimal_app.py in both of its write modes;
  * service: LedgerService.charge_alone, LedgerService.charge in engine.begin(), and the same
    writes on raw asyncpg;
  * parts: key authentication (cache hit and miss), and the per-request cost of Litestar's stock
    rate-limit history by its length (why Billfold counts fixed windows instead).

It uses a fresh database billfold_breakdown_<random> and drops it at the end. It reads product
internals (Billfold, LedgerService, KeyService), so it may need updating when they change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib
import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import uvloop

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BODY = b'{"amount_cents":1,"description":"bench"}'


async def measure(label: str, n: int, op: Callable[[], Awaitable[Any]], results: dict[str, Any]) -> float:
    for _ in range(max(50, n // 10)):
        await op()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await op()
    cpu = (time.process_time() - cpu0) / n * 1e6
    wall = (time.perf_counter() - wall0) / n * 1e6
    results[label] = {"cpu_us": round(cpu, 1), "wall_us": round(wall, 1)}
    print(f"  {label:<62} {cpu:8.1f} µs CPU   {wall:8.1f} µs wall", flush=True)
    return cpu


# -- a tiny ASGI driver --------------------------------------------------------------------------


class Lifespan:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> Lifespan:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self.outbox.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"startup failed: {message}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        if self.task:
            await self.task


async def asgi_call(
    app: Any, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status = 0
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


# -- setup ------------------------------------------------------------------------------------


async def pg(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def billfold_app(db_url: str, *, rate_limits: bool) -> tuple[Any, Any]:
    """The Litestar app and its :class:`billfold.api.app.Billfold` (the services)."""
    from billfold.api.app import Billfold, create_app
    from billfold.config import load_config

    config, lines = load_config(ROOT / "config" / "billing.yaml")
    if not rate_limits:
        config = msgspec.structs.replace(
            config, rate_limits=msgspec.structs.replace(config.rate_limits, enabled=False)
        )
    billfold = Billfold(config, lines=lines)
    return create_app(billfold), billfold


async def main(n: int) -> dict[str, Any]:
    database = f"billfold_breakdown_{secrets.token_hex(4)}"
    dsn = f"postgresql://postgres@127.0.0.1:5432/{database}"
    db_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
    os.environ.update(
        {
            "BILLFOLD_DATABASE_URL": db_url,
            "BILLFOLD_WORKER_IN_PROCESS": "false",
            "BILLFOLD_RATE_LIMIT": "100000000",
            "BILLFOLD_RATE_LIMIT_STORE": "memory",
            "BILLFOLD_ADMIN_API_KEY": "breakdown",
            "BENCH_DATABASE_URL": dsn,
        }
    )
    results: dict[str, Any] = {"n": n, "database": database}
    await pg(ADMIN_DSN, f'CREATE DATABASE "{database}"')
    try:
        from billfold.db.migrate import upgrade_async

        await upgrade_async(db_url)
        app, state = billfold_app(db_url, rate_limits=True)
        orgs = []
        for i in range(4):
            org, key = await state.orgs.create_with_key(name=f"breakdown-{i}", currency="usd")
            await state.ledger.adjust(org.id, 1_000_000_000, description="breakdown")
            orgs.append((org.id, key.api_key))
        await state.engine.dispose()

        print(f"CPU per operation, {n} sequential operations each (database {database})")
        print("ASGI, POST /v1/billing/charges (Litestar app called directly; no socket, no uvicorn):")

        def charge_op(
            the_app: Any, api_key: str, *, idempotent: bool = False
        ) -> Callable[[], Awaitable[Any]]:
            headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
            counter = iter(range(10**9))

            async def op() -> None:
                sent = {**headers, "idempotency-key": f"bd-{next(counter)}"} if idempotent else headers
                status, body = await asgi_call(the_app, "POST", "/v1/billing/charges", sent, BODY)
                if status != 201:
                    raise RuntimeError(f"charge answered {status}: {body[:300]!r}")

            return op

        app, state = billfold_app(db_url, rate_limits=True)
        async with Lifespan(app):
            await measure(
                "billfold as configured, key cached (one statement)", n, charge_op(app, orgs[0][1]), results
            )
            await measure(
                "billfold, a new Idempotency-Key each time (transaction)",
                n,
                charge_op(app, orgs[1][1], idempotent=True),
                results,
            )
            cache = state.key_cache
            cache.ttl = cache.notified_ttl = 0
            cache.clear()
            await measure("billfold, key cache always missing", n, charge_op(app, orgs[2][1]), results)
        app, _ = billfold_app(db_url, rate_limits=False)
        async with Lifespan(app):
            await measure("billfold, rate limits off, key cached", n, charge_op(app, orgs[3][1]), results)

        sys.path.insert(0, str(ROOT / "bench"))
        minimal = importlib.import_module("minimal_app")
        async with Lifespan(minimal.app):
            minimal.ONE_STATEMENT = False
            await measure(
                "minimal_app, BEGIN, UPDATE, INSERT, COMMIT", n, charge_op(minimal.app, orgs[3][1]), results
            )
            minimal.ONE_STATEMENT = True
            await measure("minimal_app, one statement", n, charge_op(minimal.app, orgs[3][1]), results)

        print("Service (no HTTP, no Litestar):")
        from sqlalchemy.ext.asyncio import AsyncEngine

        app, state = billfold_app(db_url, rate_limits=False)
        engine: AsyncEngine = state.engine
        org_id = orgs[3][0]

        async def charge_alone() -> None:
            await state.ledger.charge(org_id, 1, description="bench")

        await measure("LedgerService.charge alone (one self-committing statement)", n, charge_alone, results)

        async def service_charge() -> None:
            async with engine.begin() as conn:
                await state.ledger.charge(org_id, 1, conn=conn, description="bench")

        await measure("engine.begin() + LedgerService.charge (transaction)", n, service_charge, results)

        async def begin_only() -> None:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("SELECT 1")

        await measure("engine.begin() + exec_driver_sql('SELECT 1') + COMMIT", n, begin_only, results)

        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)

        async def raw_charge() -> None:
            async with pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(minimal.DEBIT, 1, org_id)
                await conn.fetchval(minimal.INSERT_ENTRY, org_id, -1, row[0], row[1], "bench", "{}")

        await measure("raw asyncpg: BEGIN, UPDATE, INSERT, COMMIT", n, raw_charge, results)

        async def raw_statement() -> None:
            async with pool.acquire() as conn:
                await conn.fetchrow(minimal.DEBIT_ONE_STATEMENT, 1, org_id, "bench", "{}")

        await measure("raw asyncpg: one UPDATE+INSERT statement", n, raw_statement, results)

        async def raw_select() -> None:
            async with pool.acquire() as conn, conn.transaction():
                await conn.fetchval("SELECT 1")

        await measure("raw asyncpg: BEGIN, SELECT 1, COMMIT", n, raw_select, results)
        await pool.close()

        print("Parts:")
        await _parts(n, state, org_id, results)
        await engine.dispose()
        await _rate_limit_history(results)
    finally:
        with contextlib.suppress(Exception):
            await pg(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return results


async def _parts(n: int, state: Any, org_id: uuid.UUID, results: dict[str, Any]) -> None:
    api_key = (await state.keys.issue(org_id, name="parts")).api_key

    async def authenticate() -> None:
        await state.keys.authenticate(api_key)

    await measure("KeyService.authenticate, key cache hit", n, authenticate, results)
    cache = state.key_cache
    cache.ttl = cache.notified_ttl = 0
    cache.clear()
    await measure("KeyService.authenticate, key cache miss (SELECT on api_keys)", n, authenticate, results)


async def _rate_limit_history(results: dict[str, Any]) -> None:
    """Why Billfold counts its own windows: Litestar's stock RateLimitMiddleware decodes the key's
    whole history and stores it re-encoded on every request (Billfold's counter is one increment)."""
    from litestar.middleware.rate_limit import CacheObject
    from litestar.serialization import decode_json, encode_json
    from litestar.stores.memory import MemoryStore

    print("Litestar's stock rate limiting (not used by Billfold), per request, by requests in the window:")
    store = MemoryStore()

    async def clear_store() -> None:
        await store.delete_all()

    await measure("MemoryStore.delete_all (subtract from 'empty history' above)", 1000, clear_store, results)
    for length in (10, 1_000, 6_000, 30_000, 60_000):
        now = int(time.time())
        await store.set("k", encode_json(CacheObject(history=[now] * length, reset=now + 60)), expires_in=60)

        async def op(length: int = length) -> None:
            raw = await store.get("k")
            cache_object = CacheObject(**decode_json(value=raw))
            history = [int(time.time()), *cache_object.history][:length]
            await store.set(
                "k", encode_json(CacheObject(history=history, reset=cache_object.reset)), expires_in=60
            )

        await measure(f"history of {length:,} timestamps", 300, op, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=3000, help="operations per measurement (default 3000)")
    ns = parser.parse_args()
    out = uvloop.run(main(ns.n))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"breakdown-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {path}")
