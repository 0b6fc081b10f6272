"""Rate limiting through Litestar's RateLimitConfig, with a constant-cost counter.

Litestar's stock middleware keeps every request timestamp of the window and decodes and
re-encodes that list on each request, so its cost grows with the traffic it is limiting (a hot
tenant at 500 requests a second paid for a 500-element list per request). This middleware class
plugs into the same RateLimitConfig, store and headers, but counts requests in fixed windows: one
small integer per key and window.

Each window's counters live under their own store keys. Redis expires them itself; Litestar's
MemoryStore only drops an expired key when it is read again, which a past window's key never is,
so the middleware sweeps a MemoryStore once per window (without it the store grew by one entry
per active key every window, and the garbage collector's passes grew with it).
"""

from __future__ import annotations

import time

from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import TooManyRequestsException
from litestar.middleware.rate_limit import DURATION_VALUES, RateLimitMiddleware
from litestar.stores.memory import MemoryStore
from litestar.types import Message, Receive, Scope, Send


class WindowCounterRateLimitMiddleware(RateLimitMiddleware):
    _swept_window = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope["litestar_app"]
        request = app.request_class(scope)
        if not await self.should_check_request(request=request):
            await self.app(scope, receive, send)
            return
        store = self.config.get_store_from_app(app)
        window = DURATION_VALUES[self.unit]
        now = int(time.time())
        reset_at = now - now % window + window
        key = f"{self.cache_key_from_request(request)}::{reset_at}"
        async with self._lock:
            if reset_at != self._swept_window and isinstance(store, MemoryStore):
                self._swept_window = reset_at
                await store.delete_expired()
            raw = await store.get(key)
            used = int(raw) if raw else 0
            if used >= self.max_requests:
                raise TooManyRequestsException(
                    headers={**self._headers(0, reset_at - now), "Retry-After": str(max(reset_at - now, 1))}
                )
            await store.set(key, str(used + 1), expires_in=window + 1)
        headers = self._headers(self.max_requests - used - 1, reset_at - now)
        if self.config.set_rate_limit_headers:
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
            config.rate_limit_policy_header_key: f"{self.max_requests}; w={DURATION_VALUES[self.unit]}",
            config.rate_limit_limit_header_key: str(self.max_requests),
            config.rate_limit_remaining_header_key: str(max(remaining, 0)),
            config.rate_limit_reset_header_key: str(reset_in),
        }
