"""Dependencies resolved one after the other.

Litestar resolves the dependencies a handler needs in batches; when a batch holds more than one,
it runs them concurrently in an anyio task group. Billfold's providers are constant lookups (a
service built once) or one cached key check, so the concurrency buys nothing, and the task group
costs about 230 µs a request on this machine (measured: an anyio task group starting 4 trivial
coroutines under uvloop, 232 µs; the same coroutines awaited in turn, 1.6 µs) — a third of a
charge's CPU. After
the app is built, each handler's batches are flattened into singletons in the same order, so each
provider still runs after everything it depends on.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar


def resolve_in_sequence(app: Litestar) -> int:
    """Flatten every route handler's dependency batches; returns how many handlers changed. (It
    reads Litestar's route table; if a Litestar release stores it elsewhere, nothing changes and the
    dependencies are still resolved correctly, only slower — a test checks the batches.)"""
    changed = 0
    for route in app.routes:
        handler_map: dict[str, Any] = getattr(route, "route_handler_map", {}) or {}
        for _handler, kwargs_model in handler_map.values():
            batches = getattr(kwargs_model, "dependency_batches", None)
            if batches and any(len(batch) > 1 for batch in batches):
                kwargs_model.dependency_batches = [
                    {dependency} for batch in batches for dependency in sorted(batch, key=lambda d: d.key)
                ]
                changed += 1
    return changed
