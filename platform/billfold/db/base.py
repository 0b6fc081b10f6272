"""Column types and the metadata every model registers on (advanced-alchemy's registry)."""

from __future__ import annotations

import datetime
from typing import Any

from advanced_alchemy.base import orm_registry
from advanced_alchemy.types import JsonB
from sqlalchemy import BigInteger, Integer
from sqlalchemy.types import TypeEngine

metadata = orm_registry.metadata

BigIntId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit integer that SQLite still treats as its autoincrementing rowid."""

JsonDict: TypeEngine[Any] = JsonB


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
