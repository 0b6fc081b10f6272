"""Column types and the metadata every model registers on (advanced-alchemy's registry)."""

from __future__ import annotations

import datetime
from typing import Any, cast

from advanced_alchemy.base import orm_registry
from advanced_alchemy.types import JsonB
from sqlalchemy import BigInteger, Integer, Table
from sqlalchemy.types import TypeEngine

metadata = orm_registry.metadata

BigIntId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit integer that SQLite still treats as its autoincrementing rowid."""

JsonDict: TypeEngine[Any] = JsonB


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def table_of(model: type[Any]) -> Table:
    """The Core table of a model, typed as a Table (for the SQLAlchemy Core statements)."""
    return cast("Table", model.__table__)
