"""Bounded field types for request bodies, shared by every route family.

The bounds are msgspec constraints: checked while the body is decoded (strictly: no string or
float coercion into integers), before any conversion, identically on SQLite and PostgreSQL, and
shown in the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

MAX_AMOUNT = 2**53 - 1
"""The largest amount of money any single field accepts (exact in every JSON client)."""
MAX_ID = 2**63 - 1
"""Integer identifiers from the tenant's product (call ids, phone-number ids): PostgreSQL bigint."""

NO_NUL = r"^[^\x00]*$"

Amount = Annotated[
    int, msgspec.Meta(ge=1, le=MAX_AMOUNT, description="Minor units (cents), a positive integer.")
]
"""A positive amount in minor units."""
NonNegativeAmount = Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT, description="Minor units, 0 or more.")]
SignedAmount = Annotated[
    int, msgspec.Meta(ge=-MAX_AMOUNT, le=MAX_AMOUNT, description="Minor units; negative debits.")
]
ExternalId = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
Seconds = Annotated[int, msgspec.Meta(ge=1, le=10 * 365 * 24 * 3600)]

Description = Annotated[str, msgspec.Meta(max_length=500, pattern=NO_NUL)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Reason = Annotated[
    str,
    msgspec.Meta(
        max_length=500, pattern=NO_NUL, description="Why the operator acts; recorded in the audit trail."
    ),
]
"""An operator action's reason (optional in the API; the dashboard requires one)."""
ShortText = Annotated[str, msgspec.Meta(max_length=200, pattern=NO_NUL)]
Reference = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
ProviderId = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=NO_NUL)]
PhoneNumber = Annotated[str, msgspec.Meta(max_length=32, pattern=NO_NUL)]
CurrencyCode = Annotated[str, msgspec.Meta(min_length=3, max_length=3, pattern=r"^[A-Za-z]{3}$")]
Url = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://[!-~]+$(?!\n)")]
Metadata = Annotated[
    dict[Annotated[str, msgspec.Meta(max_length=100)], Any],
    msgspec.Meta(max_length=50, description="Up to 50 keys (a request body nests at most 32 levels)."),
]
MAX_BODY_BYTES = 1024 * 1024
MAX_NESTING = 32
