"""Payment service: billing accounts, auto-reload settings, top-ups, payment methods, provider events."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.ledger.service import AccountRow
from billfold.payments import profiles
from billfold.payments.profiles import AutoReloadChange, FieldNames, ProfileRow

if TYPE_CHECKING:
    from billfold.state import AppState


class BillingView(msgspec.Struct, frozen=True):
    account: AccountRow
    profile: ProfileRow


class PaymentService:
    def __init__(self, state: AppState) -> None:
        self.state = state

    async def billing_view(self, conn: AsyncConnection, org_id: uuid.UUID) -> BillingView:
        account = await self.state.ledger.account(conn, org_id)
        profile = await profiles.get_profile(conn, org_id)
        return BillingView(account=account, profile=profile)

    async def update_auto_reload(
        self, conn: AsyncConnection, org_id: uuid.UUID, change: AutoReloadChange, names: FieldNames
    ) -> BillingView:
        current = await profiles.get_profile(conn, org_id, for_update=True)
        values = profiles.validate_change(change, current, names)
        await profiles.apply_change(conn, org_id, values)
        await self.state.ledger.refresh_watermark(conn, org_id)
        return await self.billing_view(conn, org_id)
