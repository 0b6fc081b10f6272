"""The background worker: outbox delivery and periodic ledger chores (hold expiry)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from billfold.events.outbox import Event, Handler, claim_batch, mark_done, mark_failed
from billfold.plugins import call_all

if TYPE_CHECKING:
    from billfold.state import AppState

logger = logging.getLogger("billfold.worker")


class Worker:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.handlers: dict[str, list[Handler]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    async def load_handlers(self) -> None:
        self.handlers = {}
        for answer in await call_all(self.state.pm.hook.billfold_event_handlers(state=self.state)):
            for event_type, handler in (answer or {}).items():
                self.handlers.setdefault(event_type, []).append(handler)

    def wake(self) -> None:
        """Ask for a delivery round now (e.g. right after a commit that wrote events)."""
        self._wake.set()

    async def run_once(self) -> int:
        """One round: expire due holds, deliver a batch of events. Returns events handled."""
        state = self.state
        # One hold per transaction: each takes its hold's row then its account's, the order a
        # capture or release takes them, so the sweep cannot deadlock with a tenant's request.
        for _ in range(state.config.worker.batch_size):
            async with state.engine.begin() as conn:
                if not await state.ledger.expire_due_holds(conn, limit=1):
                    break
        handled = 0
        config = state.config.worker
        async with state.engine.begin() as conn:
            batch = await claim_batch(conn, limit=config.batch_size)
        for event in batch:
            try:
                await self._deliver(event)
            except Exception as exc:
                logger.exception("event %s (%s) failed", event.id, event.type)
                async with state.engine.begin() as conn:
                    await mark_failed(conn, event, repr(exc), max_attempts=config.max_attempts)
            else:
                async with state.engine.begin() as conn:
                    await mark_done(conn, event.id)
                handled += 1
        return handled

    async def _deliver(self, event: Event) -> None:
        for handler in self.handlers.get(event.type, []):
            await handler(self.state, event)

    async def drain(self, *, rounds: int = 20) -> None:
        """Run rounds until nothing is left (used by tests and `billfold worker --once`)."""
        for _ in range(rounds):
            if not await self.run_once():
                return

    async def _loop(self) -> None:
        interval = self.state.config.worker.poll_interval_seconds
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:
                logger.exception("worker round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="billfold-worker")

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
