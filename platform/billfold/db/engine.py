"""Engine creation for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.util import greenlet_spawn

from billfold.config import DatabaseConfig


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` and ``sqlite://`` URLs and pick the async drivers."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://") and not url.startswith("sqlite+"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


def dialect_name(url: str) -> str:
    return "sqlite" if normalise_url(url).startswith("sqlite") else "postgresql"


def create_engine(config: DatabaseConfig) -> AsyncEngine:
    url = normalise_url(config.url)
    kwargs: dict[str, Any] = {"echo": config.echo}
    if url.startswith("sqlite"):
        if ":memory:" in url or url.endswith("://"):
            kwargs["poolclass"] = StaticPool
        kwargs["connect_args"] = {"timeout": 30}
        engine = create_async_engine(url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # SQLite is the embedded single-writer mode: WAL for concurrent readers, and
            # BEGIN IMMEDIATE so a writer takes the write lock up front instead of failing later.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.update(pool_size=config.pool_size, max_overflow=config.max_overflow, pool_pre_ping=False)
    return create_async_engine(url, **kwargs)


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[Any]:
    """A connection of the engine's pool as the driver's own object (asyncpg's Connection),
    outside any transaction, so each statement commits by itself.

    For the one statement of the charge hot path: SQLAlchemy's connect/execute/close around it
    cost more CPU than the statement itself (bench/breakdown.py). The connection comes from and
    returns to the same pool; one that failed mid-statement is discarded rather than reused."""
    raw = await engine.raw_connection()
    try:
        yield raw.driver_connection
    except BaseException as error:
        await greenlet_spawn(raw.invalidate, error if isinstance(error, Exception) else None)
        raise
    else:
        await greenlet_spawn(raw.close)
