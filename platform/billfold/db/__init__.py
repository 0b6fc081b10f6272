"""Database plumbing shared by every domain: the model base, engine factory and column helpers."""

from __future__ import annotations

from billfold.db.base import BigIntId, JsonDict, dialect_insert, metadata, new_id, table_of, utcnow
from billfold.db.engine import create_engine, dialect_name, driver_connection
from billfold.db.uow import Database

__all__ = [
    "BigIntId",
    "Database",
    "JsonDict",
    "create_engine",
    "dialect_insert",
    "dialect_name",
    "driver_connection",
    "metadata",
    "new_id",
    "table_of",
    "utcnow",
]
