"""Idempotency keys for every write that moves money.

The key row is inserted in the same transaction as the money movement and completed with the
response before commit. A concurrent request with the same key waits on the row (PostgreSQL's
unique index; SQLite's single writer), then replays the stored response. Failed requests roll
back with their key, so a retry after an error runs again.
"""

from __future__ import annotations

import hashlib
import uuid

import msgspec
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import LargeBinary, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.db import table_of, utcnow
from billfold.errors import Conflict, ValidationFailed
from billfold.ledger.models import IdempotencyRecord

records = table_of(IdempotencyRecord)

MAX_KEY_LENGTH = 255

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


class StoredResponse(msgspec.Struct, frozen=True):
    status_code: int
    body: bytes


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """Hash of what the request asks for; the same key with another fingerprint is a conflict."""
    try:
        canonical = msgspec.json.encode(msgspec.json.decode(body), order="sorted") if body.strip() else b""
    except msgspec.DecodeError:
        canonical = body
    return hashlib.sha256(b"\0".join((method.encode(), path.encode(), canonical))).hexdigest()


async def claim(
    conn: AsyncConnection, org_id: uuid.UUID, key: str, fingerprint: str
) -> StoredResponse | None:
    """Claim ``key`` for this request. Returns the stored response when the key was used before."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValidationFailed(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
            code="invalid_idempotency_key",
            field="Idempotency-Key",
        )
    inserted = await conn.execute(
        _CLAIM,
        {"org_id": org_id, "key": key, "request_hash": fingerprint, "empty": b"", "created_at": utcnow()},
    )
    if inserted.first() is not None:
        return None
    row = (
        await conn.execute(
            select(records.c.request_hash, records.c.status_code, records.c.response_body).where(
                records.c.org_id == org_id, records.c.key == key
            )
        )
    ).one()
    if row.request_hash != fingerprint:
        raise Conflict(
            "this Idempotency-Key was already used with a different request",
            code="idempotency_key_reused",
            fix="Use a new Idempotency-Key for a different request.",
            field="Idempotency-Key",
        )
    return StoredResponse(status_code=row.status_code, body=bytes(row.response_body))


async def complete(conn: AsyncConnection, org_id: uuid.UUID, key: str, status_code: int, body: bytes) -> None:
    await conn.execute(_COMPLETE, {"status_code": status_code, "body": body, "org_id": org_id, "key": key})
