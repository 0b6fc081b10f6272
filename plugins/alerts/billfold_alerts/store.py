"""The plugin's rows: endpoints, an organization's levels, and the delivery queue.

Deliveries are queued through the writing transaction's connection, so a committed write never
loses its event and a rolled-back one never sends it. Times on the queue are real time (leases and
retries); an event's ``timestamp`` is business time."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold import Conflict, NotFound, Unprocessable
from billfold_alerts import events as ev
from billfold_alerts.models import AlertSettings, Delivery, Endpoint

if TYPE_CHECKING:
    from billfold import LedgerService

endpoints: Table = Endpoint.__table__  # type: ignore[assignment]
settings: Table = AlertSettings.__table__  # type: ignore[assignment]
deliveries: Table = Delivery.__table__  # type: ignore[assignment]


def utcnow() -> datetime.datetime:
    """Real time (leases, retries, rotation grace): the business clock never moves these."""
    return datetime.datetime.now(datetime.UTC)


def aware(moment: datetime.datetime | None) -> datetime.datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=datetime.UTC)


class EndpointRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    org_id: uuid.UUID
    url: str
    events: list[str]
    status: str
    disabled_reason: str | None
    description: str
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime

    def signing_secrets(self, at: datetime.datetime) -> list[str]:
        """The current secret, and the previous one while its grace period lasts."""
        expires = aware(self.previous_secret_expires_at)
        if self.previous_secret and expires is not None and expires > at:
            return [self.secret, self.previous_secret]
        return [self.secret]


ENDPOINT_COLUMNS = [endpoints.c[name] for name in EndpointRow.__struct_fields__]


def endpoint_row(row: Any) -> EndpointRow:
    values = dict(row._mapping)
    for key in ("previous_secret_expires_at", "created_at", "updated_at"):
        values[key] = aware(values[key])
    values["events"] = list(values["events"] or [])
    return EndpointRow(**values)


class DeliveryRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    org_id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: str
    event: str
    body: str
    status: str
    attempts: int
    status_codes: list[Any]
    last_error: str | None
    next_attempt_at: datetime.datetime | None
    delivered_at: datetime.datetime | None
    created_at: datetime.datetime


DELIVERY_COLUMNS = [deliveries.c[name] for name in DeliveryRow.__struct_fields__]


def delivery_row(row: Any) -> DeliveryRow:
    values = dict(row._mapping)
    for key in ("next_attempt_at", "delivered_at", "created_at"):
        values[key] = aware(values[key])
    values["status_codes"] = list(values["status_codes"] or [])
    return DeliveryRow(**values)


# -- endpoints ---------------------------------------------------------------------------------------


async def count_endpoints(conn: AsyncConnection, org_id: uuid.UUID) -> int:
    return int(
        (
            await conn.execute(
                select(func.count()).select_from(endpoints).where(endpoints.c.org_id == org_id)
            )
        ).scalar_one()
    )


async def insert_endpoint(
    conn: AsyncConnection, org_id: uuid.UUID, *, url: str, events: list[str], secret: str, description: str
) -> EndpointRow:
    moment = utcnow()
    endpoint_id = uuid.uuid4()
    await conn.execute(
        endpoints.insert().values(
            id=endpoint_id,
            org_id=org_id,
            url=url,
            events=events,
            status="enabled",
            disabled_reason=None,
            description=description,
            secret=secret,
            created_at=moment,
            updated_at=moment,
        )
    )
    return await get_endpoint(conn, org_id, endpoint_id)


async def get_endpoint(
    conn: AsyncConnection, org_id: uuid.UUID, endpoint_id: uuid.UUID, *, lock: bool = False
) -> EndpointRow:
    """The organization's endpoint (another organization's is not found either)."""
    stmt = select(*ENDPOINT_COLUMNS).where(endpoints.c.id == endpoint_id, endpoints.c.org_id == org_id)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).first()
    if row is None:
        raise NotFound("no such webhook endpoint", code="webhook_not_found", field="id")
    return endpoint_row(row)


async def list_endpoints(conn: AsyncConnection, org_id: uuid.UUID) -> list[EndpointRow]:
    rows = await conn.execute(
        select(*ENDPOINT_COLUMNS)
        .where(endpoints.c.org_id == org_id)
        .order_by(endpoints.c.created_at, endpoints.c.id)
    )
    return [endpoint_row(r) for r in rows]


async def update_endpoint(
    conn: AsyncConnection, org_id: uuid.UUID, endpoint_id: uuid.UUID, **values: Any
) -> EndpointRow:
    await get_endpoint(conn, org_id, endpoint_id, lock=True)
    await conn.execute(
        update(endpoints).where(endpoints.c.id == endpoint_id).values(updated_at=utcnow(), **values)
    )
    return await get_endpoint(conn, org_id, endpoint_id)


async def change_endpoint(
    conn: AsyncConnection, ledger: LedgerService, org_id: uuid.UUID, endpoint_id: uuid.UUID, **values: Any
) -> EndpointRow:
    """Change an endpoint (its url, events, status...) and let the account learn the levels to
    watch again (none while no enabled endpoint watches the balance). The account row is locked
    first, the order every writer of the organization's rows takes."""
    await ledger.lock(conn, org_id)
    row = await update_endpoint(conn, org_id, endpoint_id, **values)
    await ledger.refresh_levels(org_id, conn=conn)
    return row


async def delete_endpoint(conn: AsyncConnection, org_id: uuid.UUID, endpoint_id: uuid.UUID) -> None:
    await get_endpoint(conn, org_id, endpoint_id, lock=True)
    await conn.execute(delete(deliveries).where(deliveries.c.endpoint_id == endpoint_id))
    await conn.execute(delete(endpoints).where(endpoints.c.id == endpoint_id))


async def disable_gone(conn: AsyncConnection, endpoint_id: uuid.UUID) -> None:
    """The receiver answered 410 Gone: stop sending until the tenant re-enables it."""
    await conn.execute(
        update(endpoints)
        .where(endpoints.c.id == endpoint_id)
        .values(status="disabled", disabled_reason="gone", updated_at=utcnow())
    )


async def watches_balance(conn: AsyncConnection, org_id: uuid.UUID) -> bool:
    """Whether an enabled endpoint of the organization subscribes to a balance event."""
    for row in await conn.execute(
        select(endpoints.c.events).where(endpoints.c.org_id == org_id, endpoints.c.status == "enabled")
    ):
        if any(ev.subscribed(list(row.events or []), name) for name in ev.BALANCE_EVENTS):
            return True
    return False


# -- levels ------------------------------------------------------------------------------------------


class Levels(msgspec.Struct, frozen=True):
    thresholds: list[int]
    fired: list[int]
    depleted: bool


async def get_levels(conn: AsyncConnection, org_id: uuid.UUID, defaults: Sequence[int]) -> Levels:
    row = (
        await conn.execute(
            select(settings.c.thresholds, settings.c.fired, settings.c.depleted).where(
                settings.c.org_id == org_id
            )
        )
    ).first()
    if row is None:
        return Levels(thresholds=sorted(defaults, reverse=True), fired=[], depleted=False)
    return Levels(
        thresholds=list(row.thresholds or []), fired=list(row.fired or []), depleted=bool(row.depleted)
    )


async def save_levels(conn: AsyncConnection, org_id: uuid.UUID, levels: Levels) -> None:
    values = {
        "thresholds": sorted(set(levels.thresholds), reverse=True),
        "fired": sorted(set(levels.fired), reverse=True),
        "depleted": levels.depleted,
        "updated_at": utcnow(),
    }
    updated = await conn.execute(update(settings).where(settings.c.org_id == org_id).values(**values))
    if updated.rowcount == 0:
        await conn.execute(settings.insert().values(org_id=org_id, **values))


# -- the queue ---------------------------------------------------------------------------------------


async def subscribers(conn: AsyncConnection, org_id: uuid.UUID, event: str) -> list[uuid.UUID]:
    """The organization's enabled endpoints subscribed to ``event``."""
    rows = await conn.execute(
        select(endpoints.c.id, endpoints.c.events).where(
            endpoints.c.org_id == org_id, endpoints.c.status == "enabled"
        )
    )
    return [r.id for r in rows if ev.subscribed(list(r.events or []), event)]


async def queue(
    conn: AsyncConnection,
    org_id: uuid.UUID,
    event: str,
    data: dict[str, Any],
    targets: Sequence[uuid.UUID],
    *,
    claimed_until: datetime.datetime | None = None,
) -> list[uuid.UUID]:
    """One delivery of one event (one id, one body) per endpoint in ``targets``, due at once;
    returns their ids. ``claimed_until``: the caller makes the first attempt itself and holds
    the lease until then."""
    if not targets:
        return []
    event_id = ev.new_event_id()
    body = ev.envelope(event_id, event, org_id, data).decode()
    moment = utcnow()
    ids = [uuid.uuid4() for _ in targets]
    await conn.execute(
        deliveries.insert(),
        [
            {
                "id": delivery_id,
                "org_id": org_id,
                "endpoint_id": target,
                "event_id": event_id,
                "event": event,
                "body": body,
                "status": "pending",
                "attempts": 1 if claimed_until else 0,
                "status_codes": [],
                "next_attempt_at": claimed_until or moment,
                "created_at": moment,
                "updated_at": moment,
            }
            for delivery_id, target in zip(ids, targets, strict=True)
        ],
    )
    return ids


async def get_delivery(conn: AsyncConnection, org_id: uuid.UUID, delivery_id: uuid.UUID) -> DeliveryRow:
    row = (
        await conn.execute(
            select(*DELIVERY_COLUMNS).where(deliveries.c.id == delivery_id, deliveries.c.org_id == org_id)
        )
    ).first()
    if row is None:
        raise NotFound("no such delivery", code="delivery_not_found", field="id")
    return delivery_row(row)


async def list_deliveries(
    conn: AsyncConnection,
    org_id: uuid.UUID,
    endpoint_id: uuid.UUID | None,
    *,
    limit: int,
    status: str | None = None,
) -> list[DeliveryRow]:
    """The newest deliveries of one endpoint (``endpoint_id`` None: of every endpoint of the
    organization)."""
    stmt = select(*DELIVERY_COLUMNS).where(deliveries.c.org_id == org_id)
    if endpoint_id is not None:
        stmt = stmt.where(deliveries.c.endpoint_id == endpoint_id)
    if status is not None:
        stmt = stmt.where(deliveries.c.status == status)
    rows = await conn.execute(
        stmt.order_by(deliveries.c.created_at.desc(), deliveries.c.id.desc()).limit(limit)
    )
    return [delivery_row(r) for r in rows]


async def replay(conn: AsyncConnection, org_id: uuid.UUID, delivery_id: uuid.UUID) -> DeliveryRow:
    """Send a finished delivery again (same event id and body) on a fresh retry schedule."""
    found = await get_delivery(conn, org_id, delivery_id)
    if found.status == "pending":
        raise Conflict("the delivery is still being attempted", code="delivery_pending", field="id")
    endpoint = await get_endpoint(conn, org_id, found.endpoint_id)
    if endpoint.status != "enabled":
        raise Unprocessable(
            "the endpoint is disabled", code="endpoint_disabled", fix="PATCH it with status enabled first."
        )
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id)
        .values(status="pending", attempts=0, next_attempt_at=utcnow(), updated_at=utcnow())
    )
    return await get_delivery(conn, org_id, delivery_id)
