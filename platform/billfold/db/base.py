"""Column types and the metadata every model registers on (advanced-alchemy's registry)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from typing import Any, cast

from advanced_alchemy.base import orm_registry
from advanced_alchemy.types import JsonB
from sqlalchemy import BigInteger, Integer, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine
from uuid_utils.compat import uuid7

metadata = orm_registry.metadata

BigIntId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit integer that SQLite still treats as its autoincrementing rowid."""

JsonDict: TypeEngine[Any] = JsonB


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def table_of(model: type[Any]) -> Table:
    """The Core table of a model, typed as a Table (for the SQLAlchemy Core statements)."""
    return cast("Table", model.__table__)


def new_id() -> uuid.UUID:
    """A time-ordered UUIDv7 (what advanced-alchemy's UUIDv7 bases generate), for Core inserts."""
    return uuid.UUID(str(uuid7()))


def dialect_insert(conn: AsyncConnection) -> Callable[[Table], Any]:
    """The dialect's INSERT construct, which offers ON CONFLICT on PostgreSQL and SQLite alike."""
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
