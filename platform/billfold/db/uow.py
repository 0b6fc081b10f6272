"""The unit of work every service uses: open a transaction, or join the caller's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession


class Database:
    """Billfold's engine and the two ways a service method gets a connection.

    A service method that changes tables takes ``conn: AsyncConnection | None = None``: given one,
    it joins the caller's transaction (the caller commits); given none, it owns its unit of work
    and commits it. Routes never open connections or transactions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def transaction(self, conn: AsyncConnection | None = None) -> AsyncIterator[AsyncConnection]:
        """Join ``conn``'s transaction, or run one of our own (commit on success, rollback on error)."""
        if conn is not None:
            yield conn
            return
        async with self.engine.begin() as own:
            yield own

    @asynccontextmanager
    async def reading(self, conn: AsyncConnection | None = None) -> AsyncIterator[AsyncConnection]:
        """A connection for reads: the caller's, or a pooled one without an explicit transaction."""
        if conn is not None:
            yield conn
            return
        async with self.engine.connect() as own:
            yield own

    @staticmethod
    @asynccontextmanager
    async def session(conn: AsyncConnection) -> AsyncIterator[AsyncSession]:
        """An ORM session on ``conn``, for advanced-alchemy repositories on cold paths.

        It works in a SAVEPOINT of the connection's transaction, released when the block ends
        (nothing is committed: the connection's owner commits). An error inside rolls back to the
        savepoint and propagates as it is (a duplicate stays advanced-alchemy's DuplicateKeyError)."""
        session = AsyncSession(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield session
            await session.commit()
        finally:
            await session.close()

    async def ping(self) -> None:
        """Raise when the database does not answer."""
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()
