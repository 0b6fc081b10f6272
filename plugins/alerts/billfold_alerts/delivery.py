"""Delivering the queue: claimed with a lease, sent concurrently with a bound, retried on a schedule.

At least once: a worker claims due deliveries by moving their ``next_attempt_at`` one lease ahead
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers never claim the same row) and commits
before sending; the outcome is written after. A worker killed in between leaves the row due again
when the lease ends, and another worker sends it again with the same ``webhook-id``. An outcome is
only written by the claim that made the attempt (``attempts`` unchanged since), so a worker that
outlived its lease never overwrites a newer attempt.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import logging
import random
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
from sqlalchemy import select, update

from billfold_alerts import destinations, metrics, signing
from billfold_alerts.config import AlertsConfig
from billfold_alerts.store import DeliveryRow, deliveries, disable_gone, endpoints, utcnow

if TYPE_CHECKING:
    from billfold import PluginState

logger = logging.getLogger("billfold.alerts")

MAX_RESPONSE_BYTES = 64 * 1024
"""A receiver's answer is read up to this much (so its connection can be reused), never more."""


class Claimed(msgspec.Struct, frozen=True):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: str
    body: str
    attempts: int
    url: str
    secrets: list[str]


class Outcome(msgspec.Struct, frozen=True):
    status_code: int | None
    error: str | None
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (a number of seconds or an HTTP date), None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return max(0.0, (moment - utcnow()).total_seconds())


class Dispatcher:
    """Sends due deliveries; one per worker process (and one client, per event loop)."""

    def __init__(self, state: PluginState, config: AlertsConfig) -> None:
        self.state = state
        self.config = config
        self.policy = destinations.Policy(production=state.config.is_production, networks=config.networks)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def max_attempts(self) -> int:
        return 1 + len(self.config.retry_schedule_seconds)

    def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A client belongs to the loop that opened its connections (tests run one loop each).
            self._client = destinations.make_client(
                self.policy,
                timeout=self.config.timeout_seconds,
                max_connections=self.config.max_concurrency,
                ca_bundle=self.config.ca_bundle,
            )
            self._loop = loop
        return self._client

    async def close(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None

    # -- the worker task -----------------------------------------------------------------------------

    async def run(self) -> int:
        """Send what is due, keeping up to ``max_concurrency`` attempts in flight (at most
        ``max_per_endpoint`` to one endpoint), claiming more as slots free up; returns when
        nothing is due and nothing is in flight. Returns how many attempts were made."""
        in_flight: dict[asyncio.Task[Outcome], uuid.UUID] = {}
        made = 0
        while True:
            free = self.config.max_concurrency - len(in_flight)
            if free > 0:
                busy = Counter(in_flight.values())
                for claimed in await self.claim(free, busy):
                    task = asyncio.create_task(self.attempt(claimed))
                    in_flight[task] = claimed.endpoint_id
                    made += 1
            if not in_flight:
                return made
            done, _ = await asyncio.wait(
                in_flight, timeout=self.config.poll_interval_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                del in_flight[task]
                if not task.cancelled() and task.exception() is not None:
                    logger.error("webhook delivery failed", exc_info=task.exception())

    async def claim(self, limit: int, busy: Counter[uuid.UUID]) -> list[Claimed]:
        now = utcnow()
        stmt = (
            select(
                deliveries.c.id,
                deliveries.c.endpoint_id,
                deliveries.c.event_id,
                deliveries.c.body,
                deliveries.c.attempts,
                endpoints.c.url,
                endpoints.c.secret,
                endpoints.c.previous_secret,
                endpoints.c.previous_secret_expires_at,
            )
            .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
            .where(
                deliveries.c.status == "pending",
                deliveries.c.next_attempt_at <= now,
                endpoints.c.status == "enabled",
            )
            .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
            .limit(limit)
        )
        async with self.state.db.transaction() as conn:
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update(of=deliveries, skip_locked=True)
            picked: list[Claimed] = []
            for row in (await conn.execute(stmt)).all():
                if busy[row.endpoint_id] >= self.config.max_per_endpoint:
                    continue
                busy[row.endpoint_id] += 1
                expires = row.previous_secret_expires_at
                if expires is not None and expires.tzinfo is None:
                    expires = expires.replace(tzinfo=datetime.UTC)
                secrets_ = [row.secret]
                if row.previous_secret and expires is not None and expires > now:
                    secrets_.append(row.previous_secret)
                picked.append(
                    Claimed(
                        id=row.id,
                        endpoint_id=row.endpoint_id,
                        event_id=row.event_id,
                        body=row.body,
                        attempts=row.attempts + 1,
                        url=row.url,
                        secrets=secrets_,
                    )
                )
            lease = now + datetime.timedelta(seconds=self.config.lease_seconds)
            for claimed in picked:
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == claimed.id)
                    .values(attempts=claimed.attempts, next_attempt_at=lease, updated_at=now)
                )
        return picked

    @staticmethod
    def claimed(row: DeliveryRow, url: str, secrets_: list[str]) -> Claimed:
        """A delivery its caller queued already claimed (``attempts`` 1, the lease held)."""
        return Claimed(
            id=row.id,
            endpoint_id=row.endpoint_id,
            event_id=row.event_id,
            body=row.body,
            attempts=row.attempts,
            url=url,
            secrets=secrets_,
        )

    async def attempt(self, claimed: Claimed) -> Outcome:
        """One attempt of a claimed delivery, its outcome written and counted."""
        outcome = await self.send(claimed)
        metrics.count(await self.record(claimed, outcome))
        return outcome

    async def send(self, claimed: Claimed) -> Outcome:
        body = claimed.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Billfold-Webhooks/1",
            **signing.signature_headers(body, claimed.event_id, int(time.time()), claimed.secrets),
        }
        try:
            async with asyncio.timeout(self.config.timeout_seconds):
                async with self.client().stream(
                    "POST", claimed.url, content=body, headers=headers
                ) as response:
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read > MAX_RESPONSE_BYTES:
                            break
                    return Outcome(
                        status_code=response.status_code,
                        error=None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}",
                        retry_after=parse_retry_after(response.headers.get("retry-after")),
                    )
        except TimeoutError:
            return Outcome(
                status_code=None, error=f"timeout: no answer within {self.config.timeout_seconds:g} s"
            )
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            refusal = destinations.refused(exc)
            if refusal is not None:
                return Outcome(status_code=None, error=str(refusal)[:500])
            return Outcome(status_code=None, error=f"{type(exc).__name__}: {exc}"[:500])

    def delay(self, attempts: int, outcome: Outcome) -> float | None:
        """Seconds until the next attempt after ``attempts`` failed ones, or None: no more."""
        if attempts >= self.max_attempts:
            return None
        if outcome.status_code in (429, 503) and outcome.retry_after is not None:
            return min(outcome.retry_after, self.config.max_retry_after_seconds)
        base = self.config.retry_schedule_seconds[attempts - 1]
        return max(0.0, base * (1 + random.uniform(-self.config.jitter, self.config.jitter)))

    async def record(self, claimed: Claimed, outcome: Outcome) -> metrics.Outcome:
        """Write an attempt's outcome; returns what became of the delivery."""
        now = utcnow()
        values: dict[str, Any] = {"updated_at": now, "last_error": outcome.error}
        gone = outcome.status_code == 410
        result: metrics.Outcome
        if outcome.delivered:
            values.update(status="delivered", delivered_at=now, next_attempt_at=None)
            result = "delivered"
        else:
            delay = None if gone else self.delay(claimed.attempts, outcome)
            if delay is None:
                values.update(status="failed", next_attempt_at=None)
                result = "gone" if gone else "failed"
            else:
                values.update(next_attempt_at=now + datetime.timedelta(seconds=delay))
                result = "retrying"
        async with self.state.db.transaction() as conn:
            stmt = select(deliveries.c.attempts, deliveries.c.status_codes, deliveries.c.status).where(
                deliveries.c.id == claimed.id
            )
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            current = (await conn.execute(stmt)).first()
            if current is None or current.attempts != claimed.attempts or current.status != "pending":
                return "superseded"  # deleted, or claimed again after this attempt's lease ended
            values["status_codes"] = [*(current.status_codes or []), outcome.status_code]
            await conn.execute(update(deliveries).where(deliveries.c.id == claimed.id).values(**values))
            if gone:
                await disable_gone(conn, claimed.endpoint_id)
        return result
