"""API keys: issued hashed (shown once), revoked, and verified on every tenant request."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from typing import Generic, TypeVar

import msgspec
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.db import Database, new_id, table_of, utcnow
from billfold.errors import NotFound, Unauthorized, ValidationFailed
from billfold.orgs.models import ApiKey, Organization

api_keys = table_of(ApiKey)
organizations = table_of(Organization)

_LIVE_KEY = select(api_keys.c.org_id).where(
    api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None)
)
"""The key lookup, built once (building it and its cache key per miss cost ~45 µs)."""

MAX_KEY_LENGTH = 200


class IssuedKey(msgspec.Struct, frozen=True):
    id: uuid.UUID
    org_id: uuid.UUID
    prefix: str
    api_key: str
    """The secret itself: returned once, never stored."""


class KeyRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    org_id: uuid.UUID
    prefix: str
    name: str
    created_at: object
    revoked_at: object


V = TypeVar("V")


def hash_key(raw: str) -> str:
    # Keys carry 192 random bits, so a fast hash is enough: no rainbow table covers that space.
    return hashlib.sha256(raw.encode()).hexdigest()


class KeyCache(Generic[V]):
    """In-process memory of verified keys, so the hot path skips the key lookup (a tenant key's
    organization; an operator key's label).

    An entry lives ``ttl`` seconds, or ``notified_ttl`` seconds while the process receives
    revocation notices (``live``; see billfold.orgs.revocations). The process that revokes a key
    forgets it at once; a notice makes every other process forget it too.
    """

    def __init__(self, ttl: float, notified_ttl: float = 0.0) -> None:
        self.ttl = ttl
        self.notified_ttl = notified_ttl
        self.live = False
        """True while revocation notices arrive (set by the listener)."""
        self.generation = 0
        """Bumped by every forget/clear: a lookup that raced a revocation is not cached."""
        self._entries: dict[str, tuple[float, V]] = {}
        self._revoked: set[str] = set()

    @property
    def lifetime(self) -> float:
        return max(self.ttl, self.notified_ttl) if self.live else self.ttl

    def get(self, key_hash: str) -> V | None:
        hit = self._entries.get(key_hash)
        if hit is None:
            return None
        if hit[0] + self.lifetime < time.monotonic():
            self._entries.pop(key_hash, None)
            return None
        return hit[1]

    def put(self, key_hash: str, value: V, generation: int) -> None:
        """Remember a key verified by a lookup that started at ``generation``."""
        if self.lifetime <= 0 or generation != self.generation or key_hash in self._revoked:
            return
        if len(self._entries) > 100_000:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic(), value)

    def revoked(self, key_hash: str) -> None:
        """This process revoked the key: never remember it again. (A lookup made here between the
        revoking statement and its commit still sees the key live; it must not cache it.)"""
        if len(self._revoked) > 100_000:
            self._revoked.clear()
        self._revoked.add(key_hash)
        self.forget(key_hash)

    def forget(self, key_hash: str) -> None:
        self.generation += 1
        self._entries.pop(key_hash, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


class ApiKeyRepository(SQLAlchemyAsyncRepository[ApiKey]):
    model_type = ApiKey


class KeyService:
    """Issue, list, revoke and verify API keys. Verification is the hot path (Core, cached)."""

    def __init__(self, db: Database, cache: KeyCache[uuid.UUID], *, prefix: str) -> None:
        self.db = db
        self.cache = cache
        self.prefix = prefix

    async def issue(
        self, org_id: uuid.UUID, *, name: str = "", conn: AsyncConnection | None = None
    ) -> IssuedKey:
        if len(name) > MAX_KEY_LENGTH:
            raise ValidationFailed(f"name must be at most {MAX_KEY_LENGTH} characters", field="name")
        raw = self.prefix + secrets.token_urlsafe(24)
        prefix = raw[: len(self.prefix) + 4]
        async with self.db.transaction(conn) as c:
            exists = (await c.execute(select(organizations.c.id).where(organizations.c.id == org_id))).first()
            if exists is None:
                raise NotFound("organization not found", code="organization_not_found")
            async with self.db.session(c) as session:
                key = await ApiKeyRepository(session=session, auto_refresh=False).add(
                    ApiKey(id=new_id(), org_id=org_id, prefix=prefix, key_hash=hash_key(raw), name=name)
                )
        return IssuedKey(id=key.id, org_id=org_id, prefix=prefix, api_key=raw)

    async def list(
        self, org_id: uuid.UUID, *, limit: int = 100, offset: int = 0, conn: AsyncConnection | None = None
    ) -> tuple[list[KeyRow], int]:
        async with self.db.reading(conn) as c, self.db.session(c) as session:
            rows, total = await ApiKeyRepository(session=session).get_many_and_count(
                LimitOffset(limit=limit, offset=offset), OrderBy("created_at", "desc"), org_id=org_id
            )
        return [
            KeyRow(
                id=r.id,
                org_id=r.org_id,
                prefix=r.prefix,
                name=r.name,
                created_at=r.created_at,
                revoked_at=r.revoked_at,
            )
            for r in rows
        ], total

    async def revoke(
        self, key_id: uuid.UUID, *, org_id: uuid.UUID | None = None, conn: AsyncConnection | None = None
    ) -> uuid.UUID:
        """Revoke a live key (of ``org_id`` when given: another organization's key is 404).
        Returns the organization the key belonged to."""
        stmt = update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        if org_id is not None:
            stmt = stmt.where(api_keys.c.org_id == org_id)
        async with self.db.transaction(conn) as c:
            row = (
                await c.execute(
                    stmt.values(revoked_at=utcnow()).returning(api_keys.c.key_hash, api_keys.c.org_id)
                )
            ).first()
            if row is None:
                raise NotFound(
                    "API key not found or already revoked", code="api_key_not_found", field="key_id"
                )
        self.cache.revoked(row.key_hash)
        return uuid.UUID(str(row.org_id))

    async def authenticate(self, raw_key: str) -> uuid.UUID:
        """Return the organization a live key belongs to, or raise Unauthorized."""
        key_hash = hash_key(raw_key)
        cached = self.cache.get(key_hash)
        if cached is not None:
            return cached
        generation = self.cache.generation
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(_LIVE_KEY, {"key_hash": key_hash})).first()
        if row is None:
            raise Unauthorized(
                "the API key is unknown or revoked",
                code="invalid_api_key",
                fix="Send a live key as `Authorization: Bearer <key>`.",
            )
        self.cache.put(key_hash, row.org_id, generation)
        return row.org_id
