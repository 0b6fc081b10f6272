"""GET /v1/admin/audit: the audit trail, newest first, filtered and cursor paged."""

from __future__ import annotations

import datetime
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter, QueryParameter

from billfold.api.auth import operator_guard
from billfold.api.openapi import responses
from billfold.api.params import CURSOR, INSTANT, anchored, parse_cursor, parse_instant
from billfold.audit.service import AuditService

ACTION = r"[a-z0-9_]{1,32}\.[a-z0-9_]{1,31}"
"""An action name: ``<thing>.<verb>`` (``ledger.adjusted``, ``api_key.revoked``...)."""


class AuditEventOut(msgspec.Struct):
    id: str
    """Also a cursor: rows below it are older."""
    created_at: datetime.datetime
    actor: str
    """An operator key's label, ``bootstrap`` (BILLFOLD_ADMIN_API_KEY), or ``cli:<user>``."""
    action: str
    organization_id: uuid.UUID | None
    target: str | None
    before: Any
    after: Any
    reason: str | None
    tracking_id: str | None
    """The request's tracking id (its log line's; an error's ``trackingId``); null from the CLI."""


class AuditPageOut(msgspec.Struct):
    data: list[AuditEventOut]
    has_more: bool
    next_cursor: str | None
    """Pass as ``cursor`` for the next (older) page; null on the last page."""
    limit: int


class AuditController(Controller):
    path = "/v1/admin/audit"
    tags = ["operator"]
    guards = [operator_guard]

    @get(
        "/",
        operation_id="AdminListAudit",
        summary="The audit trail of operator actions, newest first",
        description="One row per operator action that changed money, an organization, a key or "
        "the clock: who (the operator key's label), what, before and after, the reason and the "
        "request's tracking id. Filters combine; `since` is inclusive, `until` exclusive (a bare "
        "date as `until` means the end of that day; an `until` not after `since` is an empty "
        "page). Page with `cursor` = the previous page's `next_cursor`.",
        responses=responses(),
    )
    async def list_audit(
        self,
        audit: NamedDependency[AuditService],
        org_id: Annotated[uuid.UUID | None, QueryParameter(description="Only this organization")] = None,
        action: Annotated[
            str | None,
            QueryParameter(max_length=64, pattern=anchored(ACTION), description="e.g. `ledger.adjusted`"),
        ] = None,
        actor: Annotated[
            str | None,
            QueryParameter(
                min_length=1,
                max_length=200,
                pattern=r"^[^\x00]*$",
                description="An operator key's label, `bootstrap` or `cli:<user>`",
            ),
        ] = None,
        since: Annotated[str | None, QueryParameter(max_length=40, pattern=anchored(INSTANT))] = None,
        until: Annotated[str | None, QueryParameter(max_length=40, pattern=anchored(INSTANT))] = None,
        cursor: Annotated[
            str | None,
            QueryParameter(
                max_length=18, pattern=anchored(CURSOR), description="`next_cursor` of the previous page"
            ),
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=200, description="1-200, default 50")] = 50,
    ) -> AuditPageOut:
        start = parse_instant(since, "since")
        end = parse_instant(until, "until", end_of_day=True)
        if end is not None and len(until or "") == 10:
            end += datetime.timedelta(microseconds=1)  # the whole day, `until` being exclusive
        page = await audit.page(
            org_id=org_id,
            action=action,
            actor=actor,
            since=start,
            until=end,
            cursor=parse_cursor(cursor),
            limit=limit,
        )
        return AuditPageOut(
            data=[
                AuditEventOut(
                    id=str(row.id),
                    created_at=row.created_at,
                    actor=row.actor,
                    action=row.action,
                    organization_id=row.org_id,
                    target=row.target,
                    before=row.before,
                    after=row.after,
                    reason=row.reason,
                    tracking_id=row.tracking_id,
                )
                for row in page.items
            ],
            has_more=page.next_cursor is not None,
            next_cursor=page.next_cursor,
            limit=limit,
        )


AUDIT_ROUTES: list[Any] = [AuditController]
