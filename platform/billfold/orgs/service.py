"""Organizations and API keys: creation, hashing, revocation and authentication."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid

import msgspec
import pluggy
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billfold.config import BillfoldConfig
from billfold.db import new_id, table_of, utcnow
from billfold.errors import NotFound, Unauthorized, ValidationFailed
from billfold.ledger.service import LedgerService
from billfold.orgs.models import ApiKey, Organization
from billfold.plugins import call_all

organizations = table_of(Organization)
api_keys = table_of(ApiKey)

_LIVE_KEY = select(api_keys.c.org_id).where(
    api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None)
)
"""The key lookup, built once (building it and its cache key per miss cost ~45 µs)."""


class OrgRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    currency: str
    creator: str
    organization_type: str
    status: str
    created_at: object
    updated_at: object


class IssuedKey(msgspec.Struct, frozen=True):
    id: uuid.UUID
    org_id: uuid.UUID
    prefix: str
    api_key: str
    """The secret itself: returned once, never stored."""


def hash_key(raw: str) -> str:
    # Keys carry 192 random bits, so a fast hash is enough: no rainbow table covers that space.
    return hashlib.sha256(raw.encode()).hexdigest()


class KeyCache:
    """In-process memory of verified keys, so the hot path skips the key lookup.

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
        self._entries: dict[str, tuple[float, uuid.UUID]] = {}
        self._revoked: set[str] = set()

    @property
    def lifetime(self) -> float:
        return max(self.ttl, self.notified_ttl) if self.live else self.ttl

    def get(self, key_hash: str) -> uuid.UUID | None:
        hit = self._entries.get(key_hash)
        if hit is None:
            return None
        if hit[0] + self.lifetime < time.monotonic():
            self._entries.pop(key_hash, None)
            return None
        return hit[1]

    def put(self, key_hash: str, org_id: uuid.UUID, generation: int) -> None:
        """Remember a key verified by a lookup that started at ``generation``."""
        if self.lifetime <= 0 or generation != self.generation or key_hash in self._revoked:
            return
        if len(self._entries) > 100_000:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic(), org_id)

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


class OrgService:
    def __init__(
        self,
        engine: AsyncEngine,
        ledger: LedgerService,
        *,
        key_prefix: str,
        key_cache: KeyCache,
        pm: pluggy.PluginManager,
        config: BillfoldConfig,
    ) -> None:
        self.engine = engine
        self.pm = pm
        self.config = config
        self.ledger = ledger
        self.key_prefix = key_prefix
        self.key_cache = key_cache

    async def create(
        self, conn: AsyncConnection, *, name: str, currency: str, creator: str = "operator"
    ) -> OrgRow:
        name = name.strip()
        if not name:
            raise ValidationFailed("name must not be empty", field="name")
        currency = currency.lower()
        if currency not in self.config.currencies:
            known = ", ".join(sorted(self.config.currencies))
            raise ValidationFailed(
                f"currency must be one of: {known}", code="invalid_currency", field="currency"
            )
        org_id = new_id()
        now = utcnow()
        await conn.execute(
            organizations.insert().values(
                id=org_id, name=name, currency=currency, creator=creator, created_at=now, updated_at=now
            )
        )
        await self.ledger.open_account(conn, org_id, currency)
        org = await self.get(conn, org_id)
        await call_all(self.pm.hook.billfold_organization_created(conn=conn, org=org, config=self.config))
        # after the plugins made their per-organization rows (auto-reload settings...)
        await self.ledger.refresh_watermark(conn, org_id)
        return org

    async def get(self, conn: AsyncConnection, org_id: uuid.UUID) -> OrgRow:
        row = (await conn.execute(select(organizations).where(organizations.c.id == org_id))).first()
        if row is None:
            raise NotFound("organization not found", code="organization_not_found")
        return OrgRow(
            id=row.id,
            name=row.name,
            currency=row.currency,
            creator=row.creator,
            organization_type=row.organization_type,
            status=row.status,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    async def mark_paid(self, conn: AsyncConnection, org_id: uuid.UUID) -> None:
        await conn.execute(
            update(organizations)
            .where(organizations.c.id == org_id, organizations.c.organization_type != "paid")
            .values(organization_type="paid", updated_at=utcnow())
        )

    async def issue_key(self, conn: AsyncConnection, org_id: uuid.UUID, *, name: str = "") -> IssuedKey:
        await self.get(conn, org_id)
        raw = self.key_prefix + secrets.token_urlsafe(24)
        key_id = new_id()
        now = utcnow()
        prefix = raw[: len(self.key_prefix) + 4]
        await conn.execute(
            api_keys.insert().values(
                id=key_id,
                org_id=org_id,
                prefix=prefix,
                key_hash=hash_key(raw),
                name=name,
                created_at=now,
                updated_at=now,
            )
        )
        return IssuedKey(id=key_id, org_id=org_id, prefix=prefix, api_key=raw)

    async def revoke_key(
        self, conn: AsyncConnection, key_id: uuid.UUID, *, org_id: uuid.UUID | None = None
    ) -> None:
        stmt = update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        if org_id is not None:
            stmt = stmt.where(api_keys.c.org_id == org_id)
        result = await conn.execute(stmt.values(revoked_at=utcnow()).returning(api_keys.c.key_hash))
        row = result.first()
        if row is None:
            raise NotFound("API key not found or already revoked", code="api_key_not_found")
        self.key_cache.revoked(row.key_hash)

    async def authenticate(self, raw_key: str) -> uuid.UUID:
        """Return the organization a live key belongs to, or raise Unauthorized."""
        key_hash = hash_key(raw_key)
        cached = self.key_cache.get(key_hash)
        if cached is not None:
            return cached
        generation = self.key_cache.generation
        async with self.engine.connect() as conn:
            row = (await conn.execute(_LIVE_KEY, {"key_hash": key_hash})).first()
        if row is None:
            raise Unauthorized(
                "the API key is unknown or revoked",
                code="invalid_api_key",
                fix="Send a live key as `Authorization: Bearer <key>`.",
            )
        self.key_cache.put(key_hash, row.org_id, generation)
        return row.org_id
