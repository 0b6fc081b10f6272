"""The floor for the charge benchmark: a bare Litestar debit (and balance read) on raw asyncpg.

Same tables and the same ledger semantics as Billfold's charge (one conditional UPDATE of the
account row plus one INSERT of the entry, in one transaction; 402 when the balance is short), but
nothing else: no idempotency, plugins, rate limits, SQLAlchemy or key-lookup queries. The bearer
token is identified the way Billfold does with a warm key cache (sha256 of the token, then a dict
lookup); the dict of live keys is loaded once at start-up.

With BENCH_MINIMAL_WRITE=statement (bench/run.py --minimal-write statement) the floor writes the
way Billfold's charge without an Idempotency-Key does on PostgreSQL: the UPDATE and the INSERT as
one self-committing WITH statement, instead of BEGIN, UPDATE, INSERT, COMMIT.

Served by bench/run.py as
    uvicorn minimal_app:app --app-dir bench --workers W --loop uvloop --http httptools
with BENCH_DATABASE_URL=postgresql://... in the environment.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.enums import MediaType

POOL_SIZE = int(os.environ.get("BENCH_POOL_SIZE", "20"))  # Billfold's database.pool_size
ONE_STATEMENT = os.environ.get("BENCH_MINIMAL_WRITE", "transaction") == "statement"

DEBIT = """
UPDATE ledger_accounts
   SET free_cents = free_cents - $1, entry_count = entry_count + 1, updated_at = now()
 WHERE org_id = $2 AND free_cents - $1 >= -overage_limit_cents
RETURNING free_cents, reserved_cents
"""
INSERT_ENTRY = """
INSERT INTO ledger_entries
    (org_id, kind, amount_cents, reserved_delta_cents, free_after_cents, reserved_after_cents,
     description, metadata, created_at)
VALUES ($1, 'debit', $2, 0, $3, $4, $5, $6::jsonb, now())
RETURNING id
"""

DEBIT_ONE_STATEMENT = """
WITH account AS (
    UPDATE ledger_accounts
       SET free_cents = free_cents - $1, entry_count = entry_count + 1, updated_at = now()
     WHERE org_id = $2 AND free_cents - $1 >= -overage_limit_cents
    RETURNING org_id, free_cents, reserved_cents
), entry AS (
    INSERT INTO ledger_entries
        (org_id, kind, amount_cents, reserved_delta_cents, free_after_cents, reserved_after_cents,
         description, metadata, created_at)
    SELECT org_id, 'debit', -$1, 0, free_cents, reserved_cents, $3, $4::jsonb, now() FROM account
    RETURNING id
)
SELECT account.free_cents, account.reserved_cents, entry.id FROM account, entry
"""


class ChargeIn(msgspec.Struct):
    amount_cents: int
    description: str = ""
    metadata: dict[str, Any] = {}


_keys: dict[str, uuid.UUID] = {}
_pool: asyncpg.Pool | None = None
_decode = msgspec.json.Decoder(ChargeIn).decode
_encode = msgspec.json.encode


def _error(status: int, code: str) -> Response[bytes]:
    return Response(content=_encode({"error": {"code": code}}), status_code=status, media_type=MediaType.JSON)


@asynccontextmanager
async def lifespan(_: Litestar) -> AsyncIterator[None]:
    global _pool
    dsn = os.environ["BENCH_DATABASE_URL"]
    _pool = await asyncpg.create_pool(dsn, min_size=1, max_size=POOL_SIZE)
    async with _pool.acquire() as conn:
        for row in await conn.fetch("SELECT key_hash, org_id FROM api_keys WHERE revoked_at IS NULL"):
            _keys[row["key_hash"]] = row["org_id"]
    try:
        yield
    finally:
        await _pool.close()


@get("/health")
async def health() -> dict[str, Any]:
    return {"status": "ok", "keys": len(_keys)}


@post("/v1/billing/charges")
async def create_charge(request: Request[Any, Any, Any]) -> Response[bytes]:
    header = request.headers.get("authorization", "")
    org_id = None
    if header[:7].lower() == "bearer ":
        org_id = _keys.get(hashlib.sha256(header[7:].encode()).hexdigest())
    if org_id is None:
        return _error(401, "invalid_api_key")
    try:
        data = _decode(await request.body())
    except msgspec.ValidationError:
        return _error(422, "invalid_body")
    if data.amount_cents <= 0:
        return _error(422, "invalid_amount")
    assert _pool is not None
    if ONE_STATEMENT:
        async with _pool.acquire() as conn:
            row = await conn.fetchrow(
                DEBIT_ONE_STATEMENT,
                data.amount_cents,
                org_id,
                data.description,
                _encode(data.metadata).decode(),
            )
        if row is None:
            return _error(402, "insufficient_funds")
        return Response(
            content=_encode({"id": row[2], "balance": {"free": row[0], "reserved": row[1]}}),
            status_code=201,
            media_type=MediaType.JSON,
        )
    async with _pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(DEBIT, data.amount_cents, org_id)
        if row is None:
            return _error(402, "insufficient_funds")
        entry_id = await conn.fetchval(
            INSERT_ENTRY,
            org_id,
            -data.amount_cents,
            row[0],
            row[1],
            data.description,
            _encode(data.metadata).decode(),
        )
    return Response(
        content=_encode({"id": entry_id, "balance": {"free": row[0], "reserved": row[1]}}),
        status_code=201,
        media_type=MediaType.JSON,
    )


BALANCE = "SELECT free_cents, reserved_cents, currency FROM ledger_accounts WHERE org_id = $1"


@get("/v1/billing/balance")
async def get_balance(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The floor of GET /v1/billing/balance: the same key check, one SELECT of the account row."""
    header = request.headers.get("authorization", "")
    org_id = None
    if header[:7].lower() == "bearer ":
        org_id = _keys.get(hashlib.sha256(header[7:].encode()).hexdigest())
    if org_id is None:
        return _error(401, "invalid_api_key")
    assert _pool is not None
    async with _pool.acquire() as conn:
        row = await conn.fetchrow(BALANCE, org_id)
    if row is None:
        return _error(404, "account_not_found")
    return Response(
        content=_encode({"free": row[0], "reserved": row[1], "total": row[0] + row[1], "currency": row[2]}),
        media_type=MediaType.JSON,
    )


app = Litestar(route_handlers=[health, create_charge, get_balance], lifespan=[lifespan], debug=False)
