"""The background worker: outbox delivery, hold expiry and the plugins' periodic tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from billfold.clock import BusinessClock
from billfold.config import WorkerConfig
from billfold.db import Database
from billfold.errors import RetryLater
from billfold.events.outbox import DomainEvent, Handler, claim_batch, mark_done, mark_failed
from billfold.hookspecs import WorkerTask
from billfold.ledger.holds import HoldService
from billfold.logs import log_job
from billfold.plugins import Hooks

logger = logging.getLogger("billfold.worker")


class Worker:
    """Runs in `billfold serve` (the embedded default) or alone in `billfold worker` processes.

    Each round expires due holds and delivers a batch of outbox events to their handlers; plugin
    tasks (``billfold_worker_tasks``) run beside the rounds, each on its own interval."""

    def __init__(
        self,
        *,
        db: Database,
        holds: HoldService,
        hooks: Hooks,
        clock: BusinessClock,
        config: WorkerConfig,
    ) -> None:
        self.db = db
        self.holds = holds
        self.hooks = hooks
        self.clock = clock
        self.config = config
        self.handlers: dict[str, list[Handler]] = {}
        self.tasks: list[WorkerTask] = []
        self._loops: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    async def load_handlers(self) -> None:
        """Ask the plugins (and the core's services) for their event handlers and periodic tasks."""
        self.handlers = {}
        for answer in await self.hooks.call("billfold_event_handlers"):
            for event_type, handler in (answer or {}).items():
                self.handlers.setdefault(event_type, []).append(handler)
        self.tasks = [
            task for answer in await self.hooks.call("billfold_worker_tasks") for task in answer or ()
        ]

    def wake(self) -> None:
        """Ask for a delivery round now (e.g. right after a commit that wrote events)."""
        self._wake.set()

    async def run_once(self) -> int:
        """One round: expire due holds, deliver a batch of events. Returns events handled."""
        await self.clock.load()
        # One hold per transaction: each takes its hold's row then its account's, the order a
        # capture or release takes them, so the sweep cannot deadlock with a tenant's request.
        for _ in range(self.config.batch_size):
            if not await self.holds.expire_due(limit=1):
                break
        async with self.db.transaction() as conn:
            batch = await claim_batch(conn, limit=self.config.batch_size)
        handled = 0
        for event in batch:
            started = time.perf_counter()
            try:
                await self._deliver(event)
            except RetryLater as later:
                log_job(
                    "event",
                    event.type,
                    started,
                    "retry",
                    organization_id=event.org_id,
                    event_id=event.id,
                    attempts=event.attempts + 1,
                    retry_in_seconds=later.seconds,
                )
                async with self.db.transaction() as conn:
                    await mark_failed(
                        conn,
                        event,
                        later.reason or "retry requested",
                        max_attempts=self.config.max_attempts,
                        retry_in=later.seconds,
                    )
            except Exception as exc:
                logger.exception("event %s (%s) failed", event.id, event.type)
                log_job(
                    "event",
                    event.type,
                    started,
                    "failed",
                    organization_id=event.org_id,
                    event_id=event.id,
                    attempts=event.attempts + 1,
                    level=logging.WARNING,
                )
                async with self.db.transaction() as conn:
                    await mark_failed(conn, event, repr(exc), max_attempts=self.config.max_attempts)
            else:
                async with self.db.transaction() as conn:
                    await mark_done(conn, event.id)
                handled += 1
                log_job(
                    "event",
                    event.type,
                    started,
                    "done",
                    organization_id=event.org_id,
                    event_id=event.id,
                    attempts=event.attempts + 1,
                )
        return handled

    async def _deliver(self, event: DomainEvent) -> None:
        for handler in self.handlers.get(event.type, []):
            await handler(event)

    async def drain(self, *, rounds: int = 20) -> None:
        """Run rounds until nothing is left (used by tests and `billfold worker --once`)."""
        for _ in range(rounds):
            if not await self.run_once():
                return

    async def run_tasks_once(self) -> None:
        """Run every plugin task once (tests and `billfold worker --once`)."""
        for task in self.tasks:
            await _guarded(task.name, task.run)

    async def _loop(self) -> None:
        interval = self.config.poll_interval_seconds
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:
                logger.exception("worker round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)

    async def _task_loop(self, task: WorkerTask) -> None:
        while not self._stop.is_set():
            await _guarded(task.name, task.run)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=task.interval_seconds)

    def start(self) -> None:
        self._stop.clear()
        self._loops = [asyncio.create_task(self._loop(), name="billfold-worker")]
        self._loops += [
            asyncio.create_task(self._task_loop(task), name=f"billfold-task-{task.name}")
            for task in self.tasks
        ]

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        loops, self._loops = self._loops, []
        for loop in loops:
            await loop


async def _guarded(name: str, run: Callable[[], Awaitable[object]]) -> None:
    """Run a periodic task; its line is INFO when it did something (a truthy result) or failed,
    DEBUG when it found nothing to do (tasks run every few seconds)."""
    started = time.perf_counter()
    try:
        result = await run()
    except Exception:
        logger.exception("worker task %s failed", name)
        log_job("task", name, started, "failed", level=logging.WARNING)
    else:
        log_job("task", name, started, "done", level=logging.INFO if result else logging.DEBUG)
