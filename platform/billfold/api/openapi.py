"""What the OpenAPI document says about errors, authentication and idempotency keys.

Every error status a route can answer is documented with the real envelope (``ErrorEnvelope``);
``responses(...)`` adds a route's own statuses to the ones every authenticated route has.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter

from billfold.ledger.idempotency import MAX_KEY_LENGTH


class ErrorDetail(msgspec.Struct, rename="camel", omit_defaults=True):
    code: str
    message: str
    fix: str | None = None
    field: str | None = None
    provider: str | None = None
    provider_code: str | None = None


class ErrorEnvelope(msgspec.Struct, rename="camel"):
    """Every error: a tracking id (also in ``X-Tracking-Id`` and the log line), a machine code, a
    message, and ``error`` with the fix and the field where one helps. Some errors add fields
    (``next_action`` and ``client_secret`` on 3-D Secure, the balance on 402)."""

    tracking_id: str
    code: str
    message: str
    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Invalid request: the field is named in `error.field`",
    401: "Missing, malformed or revoked API key",
    402: "Payment required: the balance (or a cap) does not allow it, or the card was declined",
    403: "The path names another organization than the key's",
    404: "Not found (another organization's resources are not found either)",
    409: "Conflict: already done, or an Idempotency-Key reused with another request",
    413: "The body is larger than 1 MiB",
    415: "The body is not JSON",
    422: "Understood but not possible now (e.g. no payment method on file)",
    429: "Rate limited: retry after `Retry-After` seconds",
    502: "The payment provider failed or refused (nothing was charged)",
}

ALWAYS = (400, 401, 429)


def responses(*codes: int, public: bool = False) -> dict[int, ResponseSpec]:
    """ResponseSpecs of the error envelope for ``codes`` plus the ones every route can answer."""
    wanted = sorted(set(codes) | ({400, 429} if public else set(ALWAYS)))
    return {
        code: ResponseSpec(
            data_container=ErrorEnvelope, description=_DESCRIPTIONS[code], generate_examples=False
        )
        for code in wanted
    }


IDEMPOTENCY_KEY = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="Makes the write safe to retry: a replay answers the first response "
        "(`Idempotent-Replayed: true`); the same key with another request is 409.",
    ),
]
