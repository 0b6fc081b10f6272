"""The payments domain's own hook implementations (registered as a default plugin)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.db import table_of
from billfold.hookspecs import hookimpl
from billfold.payments.models import BillingProfile

_profiles = table_of(BillingProfile)


@hookimpl
async def billfold_balance_watermarks(conn: AsyncConnection, org_id: uuid.UUID) -> Any:
    """Auto-reload watches its minimum while it is enabled and not paused."""
    row = (
        await conn.execute(
            select(_profiles.c.auto_reload_minimum_cents).where(
                _profiles.c.org_id == org_id,
                _profiles.c.auto_reload_enabled.is_(True),
                _profiles.c.reload_paused.is_(False),
            )
        )
    ).first()
    return row.auto_reload_minimum_cents if row else None


@hookimpl
async def billfold_organization_created(conn: AsyncConnection, org: Any, config: Any) -> None:
    """Every organization gets a billing profile with the operator's auto-reload defaults."""
    from billfold.payments.profiles import ensure_profile

    await ensure_profile(conn, org.id, config.auto_reload)


@hookimpl
async def billfold_balance_below_watermark(
    conn: AsyncConnection, entry: Any, account: Any, state: Any
) -> None:
    """A debit that leaves the free balance under the auto-reload minimum queues one reload
    (request_auto_reload checks the minimum itself: the watermark may belong to another plugin)."""
    await state.payments.request_auto_reload(conn, account.org_id, account.free_cents)


async def _run_auto_reload(state: Any, event: Any) -> None:
    await state.payments.run_auto_reload(event.org_id, int(event.payload["amount_cents"]), event.id)


@hookimpl
def billfold_event_handlers(state: Any) -> dict[str, Any]:
    return {"auto_reload.requested": _run_auto_reload}
