"""Wire shapes of the operator and key routes."""

from __future__ import annotations

import datetime
import uuid
from typing import Literal

import msgspec

from billfold.fields import (
    Amount,
    CurrencyCode,
    Description,
    Metadata,
    Name,
    NonNegativeAmount,
    Reason,
    Reference,
    ShortText,
    SignedAmount,
)
from billfold.ledger.schemas import Balance, Transaction


class OrganizationCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    currency: CurrencyCode | None = None
    creator: ShortText = "operator"
    reason: Reason | None = None


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


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: ShortText = ""
    reason: Reason | None = None
    """Recorded in the audit trail when an operator issues the key."""


class KeyRevoke(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    reason: Reason | None = None


class KeyCreated(msgspec.Struct):
    id: uuid.UUID
    organization_id: uuid.UUID
    prefix: str
    api_key: str


class KeyRevoked(msgspec.Struct):
    id: uuid.UUID
    revoked: bool = True


class AdjustmentIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_cents: SignedAmount
    """Positive credits, negative debits; not 0."""
    description: Description
    metadata: Metadata = {}
    reason: Reason | None = None


class RefundIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_cents: Amount
    description: Description
    reference: Reference | None = None
    """Unique per organization: the same reference twice is 409 ``duplicate_reference``."""
    reason: Reason | None = None


class OverageIn(msgspec.Struct, forbid_unknown_fields=True):
    overage_limit_cents: NonNegativeAmount
    reason: Reason | None = None


Status = Literal["verified", "unverified", "blocked"]


class StatusIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    status: Status
    reason: Reason | None = None


class OrganizationStatus(msgspec.Struct):
    id: uuid.UUID
    status: str
    suspended_at: datetime.datetime | None


class OverageOut(msgspec.Struct):
    overage_limit_cents: int


class LedgerWriteOut(msgspec.Struct):
    transaction: Transaction
    balance: Balance
