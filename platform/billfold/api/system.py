"""System routes: health, the installed plugins, and the business clock (development only)."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import msgspec
import pluggy
from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from billfold import __version__
from billfold.api.auth import operator_guard
from billfold.api.openapi import responses
from billfold.audit.actions import OperatorActions
from billfold.audit.service import AuditActor
from billfold.clock import BusinessClock, now, offset
from billfold.db import Database
from billfold.errors import NotFound, Unprocessable
from billfold.fields import Reason
from billfold.plugins import PluginSections, describe_plugins


class Health(msgspec.Struct):
    status: str
    version: str


class PluginOut(msgspec.Struct):
    name: str
    version: str | None
    distribution: str | None
    default: bool
    enabled: bool
    section: str | None
    hooks: list[str]


class ClockAdvance(msgspec.Struct, forbid_unknown_fields=True):
    """Move the business clock forward by ``seconds``."""

    seconds: Annotated[int, msgspec.Meta(ge=0, le=100 * 365 * 24 * 3600)]
    reason: Reason | None = None


LATEST_BUSINESS_TIME = datetime.datetime(9000, 1, 1, tzinfo=datetime.UTC)
"""How far the business clock may be advanced (dates computed from it stay below year 10000)."""


class ClockOut(msgspec.Struct):
    now: datetime.datetime
    offset_seconds: float


@get(
    "/health",
    operation_id="Health",
    description=(
        "Answers 200 with the version when the process is up and the database answers (an unreachable"
        " database is an error). No key needed: for load balancers and probes."
    ),
    summary="Liveness and database reachability",
    tags=["system"],
    security=[{}],
)
async def health(db: NamedDependency[Database]) -> Health:
    await db.ping()
    return Health(status="ok", version=__version__)


@get(
    "/v1/admin/plugins",
    operation_id="AdminListPlugins",
    description=(
        "Every installed plugin with its version, whether billing.yaml enables it, and the hooks it "
        "implements. Operator key."
    ),
    summary="Installed plugins, enabled or not, and their hooks",
    tags=["operator"],
    guards=[operator_guard],
    responses=responses(),
)
async def list_plugins(
    pm: NamedDependency[pluggy.PluginManager], sections: NamedDependency[PluginSections]
) -> list[PluginOut]:
    return [msgspec.convert(p, PluginOut) for p in describe_plugins(pm, sections)]


@post(
    "/v1/admin/clock",
    operation_id="AdminAdvanceClock",
    description=(
        "Moves the business clock forward to test month close, plan anniversaries and expiries. "
        "Refused (404) when `environment: production`. Operator key."
    ),
    summary="Advance the business clock (development only; 404 in production)",
    tags=["operator"],
    guards=[operator_guard],
    status_code=200,
    responses=responses(404, 422, body=True),
)
async def advance_clock(
    data: JSONBody[ClockAdvance],
    clock: NamedDependency[BusinessClock],
    actions: NamedDependency[OperatorActions],
    audit_actor: NamedDependency[AuditActor],
) -> ClockOut:
    if clock.production:
        raise NotFound("not found", code="not_found")
    by = datetime.timedelta(seconds=data.seconds)
    if now() + by > LATEST_BUSINESS_TIME:
        # Each advance is bounded, their sum is not: past year 9999 every date computation fails.
        raise Unprocessable(
            f"the business clock cannot pass {LATEST_BUSINESS_TIME.date().isoformat()}",
            code="clock_out_of_range",
            field="seconds",
        )
    await actions.advance_clock(audit_actor, by, reason=data.reason)
    return ClockOut(now=now(), offset_seconds=offset().total_seconds())


@get(
    "/v1/admin/clock",
    operation_id="AdminGetClock",
    description=(
        "The business clock (real time plus any offset set with POST /v1/admin/clock) that month "
        "close, cycles and expiry use. Operator key."
    ),
    summary="The business clock",
    tags=["operator"],
    guards=[operator_guard],
    responses=responses(),
)
async def get_clock(clock: NamedDependency[BusinessClock]) -> ClockOut:
    return ClockOut(now=now(), offset_seconds=offset().total_seconds())


SYSTEM_ROUTES: list[Any] = [health, list_plugins, advance_clock, get_clock]
