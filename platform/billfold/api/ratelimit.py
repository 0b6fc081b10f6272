"""Rate limiting through Litestar's RateLimitConfig, counted with one atomic increment.

RateLimitConfig still defines the limit, the exclusions, the identifier, the headers and the 429;
this middleware class only changes how requests are counted. Litestar's stock middleware keeps
every request timestamp of the window in its store and, under one lock per process, reads,
decodes, re-encodes and writes that list on each request: its cost grows with the traffic it
limits (a hot tenant at 500 requests a second paid for a 500-element list per request), every
request of the process waits for the previous one's store round trips, and two processes sharing
Redis can still both read the same count.

Here a request is one increment of the counter of its key's fixed window:
- ``MemoryWindowCounters``: a dict in the process holding the current window only (no await
  between read and write, so no lock; a new window replaces the dict, so nothing accumulates);
- ``RedisWindowCounters``: INCR + EXPIRE in one MULTI/EXEC, atomic across every process.
Fixed windows allow a burst of up to twice the limit across a window edge; the stock sliding log
has no such edge but costs O(window) per request.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import TooManyRequestsException
from litestar.middleware.rate_limit import DURATION_VALUES, RateLimitConfig, RateLimitMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send


class WindowCounters(Protocol):
    async def hit(self, key: str, window_end: int, ttl: int) -> int:
        """Count one request for ``key`` in the window ending at ``window_end``; the new count."""
        ...

    async def close(self) -> None: ...


class MemoryWindowCounters:
    """Counters of the current window, for one process."""

    def __init__(self) -> None:
        self.window_end = 0
        self.counts: dict[str, int] = {}

    async def hit(self, key: str, window_end: int, ttl: int) -> int:
        if window_end != self.window_end:
            self.window_end = window_end
            self.counts = {}
        count = self.counts.get(key, 0) + 1
        self.counts[key] = count
        return count

    async def close(self) -> None:
        self.counts = {}


class RedisWindowCounters:
    """Counters shared by every process through Redis."""

    def __init__(self, client: Any, namespace: str = "billfold_rate_limit") -> None:
        self.client = client
        self.namespace = namespace

    async def hit(self, key: str, window_end: int, ttl: int) -> int:
        name = f"{self.namespace}:{key}:{window_end}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, ttl)
            count, _ = await pipe.execute()
        return int(count)

    async def close(self) -> None:
        await self.client.aclose()


class WindowCounterRateLimitMiddleware(RateLimitMiddleware):
    def __init__(self, app: ASGIApp, config: RateLimitConfig, counters: WindowCounters) -> None:
        super().__init__(app, config)
        self.counters = counters
        self.window = DURATION_VALUES[self.unit]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = scope["litestar_app"].request_class(scope)
        if not await self.should_check_request(request=request):
            await self.app(scope, receive, send)
            return
        now = int(time.time())
        reset_at = now - now % self.window + self.window
        used = await self.counters.hit(self.cache_key_from_request(request), reset_at, self.window + 1)
        if used > self.max_requests:
            raise TooManyRequestsException(
                headers={**self._headers(0, reset_at - now), "Retry-After": str(max(reset_at - now, 1))}
            )
        if self.config.set_rate_limit_headers:
            headers = self._headers(self.max_requests - used, reset_at - now)
            original_send = send

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message.setdefault("headers", [])
                    mutable = MutableScopeHeaders(message)
                    for name, value in headers.items():
                        mutable[name] = value
                await original_send(message)

            send = send_with_headers
        await self.app(scope, receive, send)

    def _headers(self, remaining: int, reset_in: int) -> dict[str, str]:
        config = self.config
        return {
            config.rate_limit_policy_header_key: f"{self.max_requests}; w={self.window}",
            config.rate_limit_limit_header_key: str(self.max_requests),
            config.rate_limit_remaining_header_key: str(max(remaining, 0)),
            config.rate_limit_reset_header_key: str(reset_in),
        }
