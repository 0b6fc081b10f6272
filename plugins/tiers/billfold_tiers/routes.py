"""The tiers plugin's HTTP routes: document 004's GET /v1/billing/tier and the operator's tier
routes. Imported by ``billfold_routes`` when an app is built, so the command line never loads them."""

from __future__ import annotations

import datetime
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from billfold import (
    AuditActor,
    OrgScope,
    ShortText,
    now,
    operator_guard,
    record_audit,
    responses,
)
from billfold_tiers.service import Tier, TierList, Tiers, month_of, tier_list

FAMILY_004 = {"family": "004"}
"""Errors of the tenant route take document 004's envelope, like the core's 004 routes."""


class PinIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    step: ShortText
    until: datetime.datetime | None = None
    reason: ShortText = ""


def _aware(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=datetime.UTC)
    return value


CHANNEL_QUERY = QueryParameter(
    description="One channel's tier (every tiered channel when absent)", max_length=64
)


def routes(state: Any) -> list[Any]:
    """GET /v1/billing/tier (document 004) and the operator's tier routes (show, pin, unpin)."""

    @get(
        "/v1/billing/tier",
        operation_id="GetTier",
        tags=["billing (004)"],
        summary="The volume tier of each channel this month",
        description=(
            "Per tiered channel: the step in force, how it was qualified (volume, retained, manual, "
            "default), the month's counted units, the next step and its threshold, and the downgrade "
            "counter (closed months in a row below the step's threshold)."
        ),
        opt=FAMILY_004,
        responses=responses(family="004"),
    )
    async def tier(
        org: NamedDependency[OrgScope], channel: Annotated[str | None, CHANNEL_QUERY] = None
    ) -> TierList:
        return await tier_list(state, org.org_id, channel)

    class TierAdmin(Controller):
        path = "/v1/admin/organizations/{org_id:uuid}/tiers"
        tags = ["operator: tiers"]
        guards = [operator_guard]

        @get(
            "/",
            operation_id="AdminGetTiers",
            summary="An organization's volume tiers this month",
            description="Every tiered channel's tier object this UTC month (as GET /v1/billing/tier).",
            responses=responses(404),
        )
        async def show(self, org_id: FromPath[uuid.UUID]) -> TierList:
            await state.orgs.get(org_id)
            return await tier_list(state, org_id, None)

        @put(
            "/{channel:str}/pin",
            operation_id="AdminPinTier",
            summary="Pin a channel's step (optionally until a date): never moved automatically",
            description=(
                "Body `{step, until?, reason?}`: the organization is on `step` from now on, qualification "
                "source `manual`; low months do not move it down and volume does not move it up until it "
                "is unpinned or `until` passes (then the step stays and the volume rules apply). Emits "
                "`tier.changed`. 400 `unknown_step` for a step the channel's ladder does not have."
            ),
            responses=responses(404, body=True),
        )
        async def pin(
            self,
            org_id: FromPath[uuid.UUID],
            channel: FromPath[str],
            data: JSONBody[PinIn],
            audit_actor: NamedDependency[AuditActor],
        ) -> Tier:
            tiers = Tiers(state)
            month = month_of(now())
            async with state.db.transaction() as conn:
                await state.orgs.get(org_id, conn=conn)
                before = await tiers.tier(conn, org_id, channel, month) if tiers.ladder(channel) else None
                await tiers.pin(conn, org_id, channel, data.step, _aware(data.until), data.reason)
                tier = await tiers.tier(conn, org_id, channel, month)
                await record_audit(
                    conn,
                    audit_actor,
                    "tier.pinned",
                    org_id=org_id,
                    target=channel,
                    before=before,
                    after=tier,
                    reason=data.reason or None,
                )
            return msgspec.convert(tier, Tier)

        @delete(
            "/{channel:str}/pin",
            operation_id="AdminUnpinTier",
            summary="Unpin a channel's step: from now on it is qualified by volume again",
            description=(
                "The step stays; its source becomes `volume` (the month reached its threshold), `retained` "
                "or `default`, and the downgrade counter runs from the next close. 404 `not_pinned` when "
                "the channel is not pinned."
            ),
            status_code=200,
            responses=responses(404),
        )
        async def unpin(
            self,
            org_id: FromPath[uuid.UUID],
            channel: FromPath[str],
            audit_actor: NamedDependency[AuditActor],
        ) -> Tier:
            tiers = Tiers(state)
            month = month_of(now())
            async with state.db.transaction() as conn:
                await state.orgs.get(org_id, conn=conn)
                before = await tiers.tier(conn, org_id, channel, month) if tiers.ladder(channel) else None
                await tiers.unpin(conn, org_id, channel)
                tier = await tiers.tier(conn, org_id, channel, month)
                await record_audit(
                    conn,
                    audit_actor,
                    "tier.unpinned",
                    org_id=org_id,
                    target=channel,
                    before=before,
                    after=tier,
                )
            return msgspec.convert(tier, Tier)

    return [tier, TierAdmin]
