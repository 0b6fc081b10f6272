"""The HTTP side of money writes: the request's Idempotency-Key, and the reply as a response."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, Response
from litestar.enums import MediaType

from billfold.ledger.idempotency import IdempotentRequest, Reply, request_fingerprint

IDEMPOTENCY_HEADER = "idempotency-key"
REPLAY_HEADER = "Idempotent-Replayed"


async def idempotent(request: Request[Any, Any, Any], org_id: uuid.UUID) -> IdempotentRequest | None:
    """The request's Idempotency-Key (None without one; 400 when longer than 255 characters)."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    fingerprint = request_fingerprint(request.method, request.url.path, await request.body())
    return IdempotentRequest(org_id=org_id, key=key, fingerprint=fingerprint)


def reply(result: Reply) -> Response[Any]:
    """A money write's reply: its stored bytes as they are (a replay answers the first response)."""
    return Response(
        content=result.body,
        status_code=result.status_code,
        media_type=MediaType.JSON,
        headers={REPLAY_HEADER: "true"} if result.replayed else None,
    )
