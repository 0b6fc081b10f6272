"""Revocation notices: PostgreSQL tells every serving process when an API key changes.

Migration 0002 puts a trigger on ``api_keys`` that sends the key's hash on ``CHANNEL`` whenever a
row is updated or deleted, by whatever means (a route, the CLI, SQL by hand). Each serving process
keeps one connection LISTENing there; a notice makes its KeyCache forget the key at once. While
that connection is up the cache may keep keys for ``auth.key_cache_notified_seconds``; when it is
lost the cache is cleared and falls back to ``auth.key_cache_seconds`` until the listener is back.

The connection is asyncpg's own (LISTEN needs a connection that stays out of the pool), opened
with the arguments SQLAlchemy's dialect derives from the configured URL. It must reach PostgreSQL
itself or a session-mode pooler: a transaction-mode pooler accepts LISTEN but delivers nothing, so
there set ``auth.key_cache_notified_seconds: 0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

from billfold.orgs.keys import KeyCache

if TYPE_CHECKING:
    import asyncpg

logger = logging.getLogger("billfold.revocations")

CHANNEL = "billfold_api_keys"
TRIGGER = "api_keys_notify_change"
"""Migration 0002's trigger: without it nothing is ever announced, so the listener stays off."""
APPLICATION_NAME = "billfold-revocations"
"""How the listening connections show in pg_stat_activity."""
_SQLALCHEMY_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn")


class NoNotices(Exception):
    """The database has no revocation trigger (migration 0002 not applied): nothing to listen to."""


class RevocationListener:
    """One LISTEN connection per process, re-opened when lost (the cache is cleared meanwhile)."""

    def __init__(
        self,
        engine: AsyncEngine,
        cache: KeyCache[Any],
        *,
        also: Sequence[KeyCache[Any]] = (),
        retry_seconds: float = 1.0,
        ping_seconds: float = 30.0,
        no_trigger_retry_seconds: float = 60.0,
    ) -> None:
        self._engine = engine
        self._cache = cache
        self._caches = (cache, *also)
        """Every cache the notices reach (the operator keys' too: their trigger uses the channel)."""
        self._retry_seconds = retry_seconds
        self._ping_seconds = ping_seconds
        self._no_trigger_retry_seconds = no_trigger_retry_seconds
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._engine.dialect.name == "postgresql" and self._cache.notified_ttl > 0

    @property
    def listening(self) -> bool:
        return self._cache.live

    async def start(self) -> None:
        """Listen before the first request when the database answers; keep trying otherwise."""
        if not self.enabled or self._task is not None:
            return
        wait = await self._try_connect()
        self._task = asyncio.create_task(self._supervise(wait), name="billfold-revocation-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()

    async def _try_connect(self) -> float | None:
        """Connect and listen; None when listening, else how long to wait before trying again."""
        try:
            await self._connect()
        except NoNotices:
            logger.warning(
                "revocation listener: trigger %s is missing (run `billfold db upgrade`); keys are "
                "cached for auth.key_cache_seconds only",
                TRIGGER,
            )
            return self._no_trigger_retry_seconds
        except Exception as error:  # whatever it is, keep trying
            logger.warning("revocation listener: cannot connect (%s); retrying", error)
            return self._retry_seconds
        return None

    async def _connect(self) -> None:
        # Only a PostgreSQL server listens: SQLite and the command line never load asyncpg (15 ms).
        import asyncpg

        args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
        for name in _SQLALCHEMY_ONLY:
            kwargs.pop(name, None)
        kwargs["server_settings"] = {
            **kwargs.get("server_settings", {}),
            "application_name": APPLICATION_NAME,
        }
        conn: asyncpg.Connection = await asyncio.wait_for(asyncpg.connect(*args, **kwargs), timeout=10)
        try:
            if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = $1)", TRIGGER):
                raise NoNotices(TRIGGER)
            await conn.add_listener(CHANNEL, self._on_notice)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_termination)
        self._conn = conn
        self._lost.clear()
        # Anything revoked before LISTEN took effect was never announced: start from nothing.
        for cache in self._caches:
            cache.clear()
            cache.live = True
        logger.info("listening for API key revocations on %s", CHANNEL)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        for cache in self._caches:
            cache.live = False
        if conn is not None and not conn.is_closed():
            conn.remove_termination_listener(self._on_termination)
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except Exception:
                conn.terminate()  # a dead socket cannot be closed politely

    def _on_notice(self, _conn: Any, _pid: int, _channel: str, key_hash: object) -> None:
        for cache in self._caches:
            cache.forget(str(key_hash))

    def _on_termination(self, _conn: Any) -> None:
        self._mark_lost()

    def _mark_lost(self) -> None:
        # Notices may be missed from now on: stop trusting the long lifetime at once.
        for cache in self._caches:
            cache.live = False
            cache.clear()
        self._lost.set()

    async def _supervise(self, first_wait: float | None) -> None:
        if first_wait is not None:
            await asyncio.sleep(first_wait)
        while True:
            if self._conn is None or self._lost.is_set():
                await self._disconnect()
                wait = await self._try_connect()
                if wait is not None:
                    await asyncio.sleep(wait)
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=self._ping_seconds)
                continue
            # A connection that died silently (no FIN) never reports it: ask it something.
            try:
                assert self._conn is not None
                await asyncio.wait_for(self._conn.fetchval("SELECT 1"), timeout=5)
            except Exception:
                logger.warning("revocation listener: connection lost; reconnecting")
                self._mark_lost()
