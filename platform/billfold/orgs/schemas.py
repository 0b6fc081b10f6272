"""Wire shapes of the operator and key routes."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import msgspec

from billfold.ledger.schemas import Balance, Transaction


class OrganizationCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    currency: str | None = None
    creator: str = "operator"


class OrganizationOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    currency: str
    organization_type: str
    created_at: datetime.datetime


class OrganizationCreated(OrganizationOut):
    api_key: str
    """Shown once; only its hash is stored."""
    key_id: uuid.UUID


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str = ""


class KeyCreated(msgspec.Struct):
    id: uuid.UUID
    organization_id: uuid.UUID
    prefix: str
    api_key: str


class KeyRevoked(msgspec.Struct):
    id: uuid.UUID
    revoked: bool = True


class AdjustmentIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_cents: int
    description: str
    metadata: dict[str, Any] = {}


class RefundIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_cents: int
    description: str
    reference: str | None = None


class OverageIn(msgspec.Struct, forbid_unknown_fields=True):
    overage_limit_cents: int


class LedgerWriteOut(msgspec.Struct):
    transaction: Transaction
    balance: Balance
