"""Run a money-moving write in one transaction, with the request's Idempotency-Key."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.enums import MediaType
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.ledger.idempotency import claim, complete, request_fingerprint
from billfold.state import AppState

IDEMPOTENCY_HEADER = "idempotency-key"
REPLAY_HEADER = "Idempotent-Replayed"


async def money_write(
    state: AppState,
    request: Request[Any, Any, Any],
    org_id: uuid.UUID,
    work: Callable[[AsyncConnection], Awaitable[Any]],
    *,
    status_code: int = 201,
) -> Response[bytes]:
    """Execute ``work`` and answer with its result; a replayed key answers the first response."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    async with state.engine.begin() as conn:
        if key is not None:
            fingerprint = request_fingerprint(request.method, request.url.path, await request.body())
            stored = await claim(conn, org_id, key, fingerprint)
            if stored is not None:
                return Response(
                    content=stored.body,
                    status_code=stored.status_code,
                    media_type=MediaType.JSON,
                    headers={REPLAY_HEADER: "true"},
                )
        result = await work(conn)
        if key is not None:
            body = msgspec.json.encode(result)
            await complete(conn, org_id, key, status_code, body)
    if key is None:
        # Encoded after commit: the account row lock is not held while the response is built.
        body = msgspec.json.encode(result)
    return Response(content=body, status_code=status_code, media_type=MediaType.JSON)
