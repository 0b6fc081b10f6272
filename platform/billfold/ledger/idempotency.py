"""Idempotency keys for every write that moves money, across processes.

One table, two ways to use it:

- a write that is one database transaction (charges, holds, adjustments, usage) claims the key,
  writes and stores its response in that same transaction (:meth:`IdempotencyService.run`). A
  concurrent request with the same key waits on the row (PostgreSQL's unique index, SQLite's single
  writer), then replays the stored response;
- a write that calls a payment provider between two transactions (top-ups) claims the key in the
  first (:meth:`begin`), and stores the response in the second (:meth:`finish`). A concurrent
  request finds the claim pending and waits for it; a claim whose process died is taken over after
  ``PENDING_LEASE``. The provider's own idempotency key is derived from ours, so a retry never pays
  twice.

A replay answers the first response (``Idempotent-Replayed: true``); the same key with another
request is 409 ``idempotency_key_reused``. A failed write is not stored: its claim is released, so
a retry runs again.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import LargeBinary, bindparam, delete, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.db import Database, table_of, utcnow
from billfold.errors import Conflict, ValidationFailed
from billfold.ledger.models import IdempotencyRecord

T = TypeVar("T")

records = table_of(IdempotencyRecord)

MAX_KEY_LENGTH = 255
PENDING = 0
"""status_code of a claim whose response is not stored yet."""
PENDING_LEASE = datetime.timedelta(seconds=60)
"""A pending claim older than this belongs to a process that died: another request takes it over."""
WAIT_SECONDS = 10.0
"""How long a request waits for a concurrent one with the same key before answering 409."""

# Constant statements, compiled once: the dialects' INSERT ... ON CONFLICT constructs are not
# cacheable in SQLAlchemy (they were compiled anew on every keyed request), and building the Core
# UPDATE per request cost about as much as running it. Typed parameters keep the UUID and time
# conversions of both databases.
_CLAIM = text(
    "INSERT INTO idempotency_keys (org_id, key, request_hash, status_code, response_body, created_at) "
    "VALUES (:org_id, :key, :request_hash, 0, :empty, :created_at) "
    "ON CONFLICT (org_id, key) DO NOTHING RETURNING key"
).bindparams(
    bindparam("org_id", type_=GUID()),
    bindparam("empty", type_=LargeBinary()),
    bindparam("created_at", type_=DateTimeUTC(timezone=True)),
)
_COMPLETE = text(
    "UPDATE idempotency_keys SET status_code = :status_code, response_body = :body "
    "WHERE org_id = :org_id AND key = :key"
).bindparams(bindparam("org_id", type_=GUID()), bindparam("body", type_=LargeBinary()))


class IdempotentRequest(msgspec.Struct, frozen=True):
    """A keyed request: whose it is, its key and the hash of what it asks for."""

    org_id: uuid.UUID
    key: str
    fingerprint: str

    def __post_init__(self) -> None:
        if not self.key or len(self.key) > MAX_KEY_LENGTH or "\x00" in self.key:
            raise ValidationFailed(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
                code="invalid_idempotency_key",
                field="Idempotency-Key",
            )

    @property
    def provider_key(self) -> str:
        """What the payment provider is given as its own idempotency key for this request."""
        return f"{self.org_id}:{hashlib.sha256(self.key.encode()).hexdigest()[:32]}"


class StoredResponse(msgspec.Struct, frozen=True):
    status_code: int
    body: bytes


class Reply(msgspec.Struct, frozen=True):
    """What a money write answers: its status and body, and whether it is a replay."""

    status_code: int
    body: bytes
    replayed: bool = False


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """Hash of what the request asks for; the same key with another fingerprint is a conflict."""
    try:
        canonical = msgspec.json.encode(msgspec.json.decode(body), order="sorted") if body.strip() else b""
    except (msgspec.DecodeError, RecursionError):
        canonical = body
    return hashlib.sha256(b"\0".join((method.encode(), path.encode(), canonical))).hexdigest()


def _reused() -> Conflict:
    return Conflict(
        "this Idempotency-Key was already used with a different request",
        code="idempotency_key_reused",
        fix="Use a new Idempotency-Key for a different request.",
        field="Idempotency-Key",
    )


class IdempotencyService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def run(
        self,
        request: IdempotentRequest | None,
        work: Callable[[AsyncConnection], Awaitable[T]],
        encode: Callable[[T], bytes],
        *,
        status_code: int = 201,
    ) -> Reply:
        """Run ``work`` in one transaction with the key's claim and stored response."""
        if request is None:
            async with self.db.transaction() as conn:
                result = await work(conn)
            # Encoded after commit: the account row lock is not held while the response is built.
            return Reply(status_code, encode(result))
        async with self.db.transaction() as conn:
            try:
                stored = await self._claim(conn, request)
            except Pending:
                raise self._in_progress() from None
            if stored is not None and stored.status_code != PENDING:
                return Reply(stored.status_code, stored.body, replayed=True)
            if stored is not None:
                # A two-phase write (a top-up) holds this key: the same request is in flight.
                raise self._in_progress()
            result = await work(conn)
            body = encode(result)
            await conn.execute(
                _COMPLETE,
                {"status_code": status_code, "body": body, "org_id": request.org_id, "key": request.key},
            )
        return Reply(status_code, body)

    # -- two-phase writes (a provider call between two transactions) ------------------------------

    async def begin(self, conn: AsyncConnection, request: IdempotentRequest) -> Reply | None:
        """Claim the key for a two-phase write, in the caller's (first) transaction.

        Returns the stored reply when the key was completed before. A pending claim of a live
        request is waited for (outside any transaction: the caller must commit first, so this
        raises :class:`Pending`; see :meth:`claim_or_wait`)."""
        stored = await self._claim(conn, request)
        if stored is None:
            return None
        if stored.status_code != PENDING:
            return Reply(stored.status_code, stored.body, replayed=True)
        raise Pending()

    async def claim_or_wait(
        self, request: IdempotentRequest, first_phase: Callable[[AsyncConnection], Awaitable[None]]
    ) -> Reply | None:
        """Run ``first_phase`` and claim the key in one transaction; while another request with the
        same key is in flight, wait for its reply (up to WAIT_SECONDS), or take over a claim whose
        process died. None: the key is ours, go on."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                async with self.db.transaction() as conn:
                    await first_phase(conn)
                    return await self.begin(conn, request)
            except Pending:
                pass
            if await self._take_over_stale(request):
                continue
            if time.monotonic() > deadline:
                raise self._in_progress()
            await asyncio.sleep(0.05)

    async def finish(
        self, conn: AsyncConnection, request: IdempotentRequest, status_code: int, body: bytes
    ) -> None:
        """Store the reply, in the caller's (second) transaction."""
        await conn.execute(
            _COMPLETE,
            {"status_code": status_code, "body": body, "org_id": request.org_id, "key": request.key},
        )

    async def release(self, request: IdempotentRequest) -> None:
        """Forget a pending claim whose write failed, so a retry runs again."""
        async with self.db.transaction() as conn:
            await conn.execute(
                delete(records).where(
                    records.c.org_id == request.org_id,
                    records.c.key == request.key,
                    records.c.status_code == PENDING,
                )
            )

    async def _take_over_stale(self, request: IdempotentRequest) -> bool:
        async with self.db.transaction() as conn:
            # The dead request's claim is dropped; the next round claims the key afresh.
            taken = await conn.execute(
                delete(records).where(
                    records.c.org_id == request.org_id,
                    records.c.key == request.key,
                    records.c.status_code == PENDING,
                    records.c.created_at < utcnow() - PENDING_LEASE,
                )
            )
            return bool(taken.rowcount)

    # -- the claim -------------------------------------------------------------------------------

    async def _claim(self, conn: AsyncConnection, request: IdempotentRequest) -> StoredResponse | None:
        """Claim ``key`` for this request. Returns what is stored when the key was used before."""
        inserted = await conn.execute(
            _CLAIM,
            {
                "org_id": request.org_id,
                "key": request.key,
                "request_hash": request.fingerprint,
                "empty": b"",
                "created_at": utcnow(),
            },
        )
        if inserted.first() is not None:
            return None
        row = (
            await conn.execute(
                select(records.c.request_hash, records.c.status_code, records.c.response_body).where(
                    records.c.org_id == request.org_id, records.c.key == request.key
                )
            )
        ).first()
        if row is None:  # released by its failed request between our two statements
            raise Pending()
        if row.request_hash != request.fingerprint:
            raise _reused()
        return StoredResponse(status_code=row.status_code, body=bytes(row.response_body))

    @staticmethod
    def _in_progress() -> Conflict:
        return Conflict(
            "a request with this Idempotency-Key is still in progress",
            code="idempotency_request_in_progress",
            fix="Retry after a moment with the same Idempotency-Key.",
            field="Idempotency-Key",
            headers={"Retry-After": "1"},
        )


class Pending(Exception):
    """The key is claimed by a two-phase write still in flight."""
