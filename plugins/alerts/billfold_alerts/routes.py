"""Document 004's webhook and alert routes, in its words (snake_case, major units, its errors).

Endpoints: POST/GET ``/v1/webhooks``, GET/PATCH/DELETE ``/v1/webhooks/{id}``, POST
``/v1/webhooks/{id}/test``, ``/rotate-secret``, GET ``/v1/webhooks/{id}/deliveries``, POST
``/v1/webhooks/deliveries/{id}/replay``; levels: GET/PUT ``/v1/billing/alerts``. Another
organization's endpoint or delivery is 404. ``POST /v1/webhooks/stripe`` (the core's provider
webhook) is a static path, which Litestar matches before these parameters.
"""

from __future__ import annotations

import datetime
import re
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from litestar import Request, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter

from billfold import (
    MAX_AMOUNT,
    Conflict,
    Description,
    NotFound,
    OrgScope,
    TenantController,
    Unprocessable,
    Url,
    ValidationFailed,
    major_to_minor,
    responses,
)
from billfold_alerts import destinations, signing, store
from billfold_alerts import events as ev
from billfold_alerts.config import AlertsConfig
from billfold_alerts.delivery import Dispatcher

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from billfold import PluginState

OPT = {"family": "004"}
"""Errors in document 004's envelope ``{error, message, details}``."""
TAGS = ["webhooks (004)"]

EventName = Literal[
    "*",
    "billing.balance_low",
    "billing.balance_recovered",
    "billing.balance_depleted",
    "payment.succeeded",
    "payment.failed",
    "auto_reload.succeeded",
    "auto_reload.failed",
    "auto_reload.requires_action",
    "auto_reload.paused",
    "auto_reload.limit_reached",
    "usage.cap_warning",
    "usage.cap_exceeded",
    "tier.changed",
    "invoice.finalized",
]
Events = Annotated[list[EventName], msgspec.Meta(min_length=1, max_length=len(ev.CATALOG) + 1)]
Secret = Annotated[str, msgspec.Meta(max_length=200, description="whsec_ + base64 of 24 to 64 bytes")]
MAX_LEVELS = 10
Level = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]


class EndpointIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: Url
    events: Events
    secret: Secret | None = None
    """Left out: one is generated and shown once, in this answer."""
    description: Description = ""


class EndpointPatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: Url | msgspec.UnsetType = msgspec.UNSET
    events: Events | msgspec.UnsetType = msgspec.UNSET
    status: Literal["enabled", "disabled"] | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET


class EndpointOut(msgspec.Struct):
    id: uuid.UUID
    url: str
    events: list[str]
    status: str
    """enabled | disabled"""
    disabled_reason: str | None
    """``gone`` when the receiver answered 410, ``operator`` when the operator disabled it from the
    dashboard; null when a tenant disabled it or it is enabled."""
    description: str
    previous_secret_expires_at: datetime.datetime | None
    """While set and in the future, deliveries are signed with the old secret too."""
    created_at: datetime.datetime
    updated_at: datetime.datetime


class EndpointCreated(msgspec.Struct):
    id: uuid.UUID
    url: str
    events: list[str]
    status: str
    disabled_reason: str | None
    description: str
    secret: str
    """Shown once: only its owner's receiver needs it."""
    previous_secret_expires_at: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class EndpointList(msgspec.Struct):
    data: list[EndpointOut]


class EndpointDeleted(msgspec.Struct):
    id: uuid.UUID
    deleted: bool


class RotateIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    grace_seconds: Annotated[int, msgspec.Meta(ge=0, le=7 * 24 * 3600)] = 24 * 3600
    """How long deliveries carry a signature with the old secret too (0: from now on, the new only)."""
    secret: Secret | None = None


class RotateOut(msgspec.Struct):
    id: uuid.UUID
    secret: str
    previous_secret_expires_at: datetime.datetime | None


class DeliveryOut(msgspec.Struct):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: str
    """The event's ``id`` and the ``webhook-id`` header: the same on every attempt and replay."""
    event: str
    status: str
    """pending | delivered | failed"""
    attempts: int
    status_codes: list[int | None]
    """The HTTP status of each attempt, null where none came (timeout, refused, unreachable)."""
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime.datetime | None
    """When a pending delivery is tried next (real time)."""
    created_at: datetime.datetime
    delivered_at: datetime.datetime | None


class DeliveryList(msgspec.Struct):
    data: list[DeliveryOut]


class AlertsOut(msgspec.Struct):
    low_balance_threshold: float | None
    """Document 004's form: the highest level, in major units (null: no levels)."""
    thresholds: list[int]
    """Every level, minor units, highest first."""
    currency: str


class AlertsIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    low_balance_threshold: (
        Annotated[float, msgspec.Meta(ge=0, description="Major units (one level); null disables.")]
        | msgspec.UnsetType
        | None
    ) = msgspec.UNSET
    thresholds: Annotated[list[Level], msgspec.Meta(max_length=MAX_LEVELS)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    """Minor units, several levels; null or [] disables."""


class _RawThreshold(msgspec.Struct):
    low_balance_threshold: msgspec.Raw = msgspec.Raw(b"")


_PLAIN_NUMBER = re.compile(rb"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")


IdText = Annotated[str, PathParameter(max_length=64, description="A UUID")]
"""A path id, read as text so that a malformed one is 404 in this family's envelope (a typed
parameter that does not parse is answered before the route, in another envelope)."""


def parse_id(value: str, code: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("no such " + code.removesuffix("_not_found"), code=code, field="id") from None


def endpoint_out(row: store.EndpointRow) -> EndpointOut:
    return EndpointOut(
        id=row.id,
        url=row.url,
        events=row.events,
        status=row.status,
        disabled_reason=row.disabled_reason,
        description=row.description,
        previous_secret_expires_at=row.previous_secret_expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def delivery_out(row: store.DeliveryRow) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event=row.event,
        status=row.status,
        attempts=row.attempts,
        status_codes=row.status_codes,
        last_status_code=row.status_codes[-1] if row.status_codes else None,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
    )


def routes(state: PluginState, dispatcher: Dispatcher) -> list[Any]:
    """The plugin's route handlers, bound to the running Billfold's ``state``."""
    config: AlertsConfig = state.plugin_config("alerts")
    policy = dispatcher.policy

    async def refresh(conn: AsyncConnection, org_id: uuid.UUID) -> None:
        """The account learns the levels to watch (none while no endpoint watches the balance)."""
        await state.ledger.refresh_levels(org_id, conn=conn)

    def currency_units(code: str) -> int:
        found = state.config.currencies.get(code.lower())
        return found.minor_units if found is not None else 2

    class WebhooksController(TenantController):
        path = "/v1/webhooks"
        tags = TAGS
        opt = OPT

        @post(
            "/",
            operation_id="CreateWebhookEndpoint",
            description=(
                "Register an endpoint `{url, events, secret?}`; the `whsec_` secret is generated when left "
                "out and shown once. In production the URL must be https and public."
            ),
            summary="Create a webhook endpoint (the secret is shown once)",
            responses=responses(409, 422, body=True, family="004"),
        )
        async def create(self, data: JSONBody[EndpointIn], org: NamedDependency[OrgScope]) -> EndpointCreated:
            secret = (
                signing.check_secret(data.secret) if data.secret is not None else signing.generate_secret()
            )
            await destinations.check_url(policy, data.url)
            async with state.db.transaction() as conn:
                await state.ledger.lock(conn, org.org_id)
                if await store.count_endpoints(conn, org.org_id) >= config.max_endpoints:
                    raise Conflict(
                        f"an organization has at most {config.max_endpoints} webhook endpoints",
                        code="too_many_endpoints",
                        fix="Delete an endpoint you no longer use.",
                    )
                row = await store.insert_endpoint(
                    conn,
                    org.org_id,
                    url=data.url,
                    events=list(dict.fromkeys(data.events)),
                    secret=secret,
                    description=data.description,
                )
                await refresh(conn, org.org_id)
            return EndpointCreated(secret=secret, **msgspec.structs.asdict(endpoint_out(row)))

        @get(
            "/",
            operation_id="ListWebhookEndpoints",
            description=("The organization's webhook endpoints (secrets are never shown again)."),
            summary="The organization's webhook endpoints",
            responses=responses(family="004"),
        )
        async def list_endpoints(self, org: NamedDependency[OrgScope]) -> EndpointList:
            async with state.db.reading() as conn:
                return EndpointList(
                    data=[endpoint_out(r) for r in await store.list_endpoints(conn, org.org_id)]
                )

        @get(
            "/{webhook_id:str}",
            operation_id="GetWebhookEndpoint",
            description=(
                "One endpoint: url, events, status and why it was disabled; another organization's is 404."
            ),
            summary="A webhook endpoint",
            responses=responses(404, family="004"),
        )
        async def get_endpoint(
            self, webhook_id: FromPath[IdText], org: NamedDependency[OrgScope]
        ) -> EndpointOut:
            async with state.db.reading() as conn:
                return endpoint_out(
                    await store.get_endpoint(conn, org.org_id, parse_id(webhook_id, "webhook_not_found"))
                )

        @patch(
            "/{webhook_id:str}",
            operation_id="UpdateWebhookEndpoint",
            description=(
                "Change `url`, `events`, `description` or `status` (re-enable an endpoint a 410 disabled)."
            ),
            summary="Change an endpoint's url, events or status (re-enable one disabled by a 410)",
            responses=responses(404, 422, body=True, family="004"),
        )
        async def update(
            self,
            webhook_id: FromPath[IdText],
            data: JSONBody[EndpointPatch],
            org: NamedDependency[OrgScope],
        ) -> EndpointOut:
            values: dict[str, Any] = {}
            if not isinstance(data.url, msgspec.UnsetType):
                await destinations.check_url(policy, data.url)
                values["url"] = data.url
            if not isinstance(data.events, msgspec.UnsetType):
                values["events"] = list(dict.fromkeys(data.events))
            if not isinstance(data.status, msgspec.UnsetType):
                values["status"] = data.status
                values["disabled_reason"] = None
            if not isinstance(data.description, msgspec.UnsetType):
                values["description"] = data.description
            async with state.db.transaction() as conn:
                row = await store.change_endpoint(
                    conn, state.ledger, org.org_id, parse_id(webhook_id, "webhook_not_found"), **values
                )
            return endpoint_out(row)

        @delete(
            "/{webhook_id:str}",
            operation_id="DeleteWebhookEndpoint",
            description=("Remove the endpoint and its delivery log."),
            summary="Delete an endpoint and its delivery log",
            status_code=200,
            responses=responses(404, family="004"),
        )
        async def remove(
            self, webhook_id: FromPath[IdText], org: NamedDependency[OrgScope]
        ) -> EndpointDeleted:
            async with state.db.transaction() as conn:
                await state.ledger.lock(conn, org.org_id)
                await store.delete_endpoint(conn, org.org_id, parse_id(webhook_id, "webhook_not_found"))
                await refresh(conn, org.org_id)
            return EndpointDeleted(id=parse_id(webhook_id, "webhook_not_found"), deleted=True)

        @post(
            "/{webhook_id:str}/test",
            operation_id="TestWebhookEndpoint",
            description=(
                "Send a `webhook.test` event to this endpoint now and answer the delivery after its first "
                "attempt."
            ),
            summary="Send a webhook.test event to this endpoint now; answers the delivery",
            status_code=200,
            responses=responses(404, 422, family="004"),
        )
        async def test(self, webhook_id: FromPath[IdText], org: NamedDependency[OrgScope]) -> DeliveryOut:
            lease = store.utcnow() + datetime.timedelta(seconds=config.lease_seconds)
            async with state.db.transaction() as conn:
                endpoint = await store.get_endpoint(
                    conn, org.org_id, parse_id(webhook_id, "webhook_not_found")
                )
                if endpoint.status != "enabled":
                    raise Unprocessable(
                        "the endpoint is disabled",
                        code="endpoint_disabled",
                        fix="PATCH it with status enabled first.",
                    )
                data = {"message": "A test event from Billfold.", "endpoint_id": str(endpoint.id)}
                (delivery_id,) = await store.queue(
                    conn, org.org_id, ev.TEST_EVENT, data, [endpoint.id], claimed_until=lease
                )
                queued = await store.get_delivery(conn, org.org_id, delivery_id)
            # The first attempt is made here (the lease is ours); a failure is retried by the worker.
            await dispatcher.attempt(
                dispatcher.claimed(queued, endpoint.url, endpoint.signing_secrets(store.utcnow()))
            )
            async with state.db.reading() as conn:
                return delivery_out(await store.get_delivery(conn, org.org_id, delivery_id))

        @post(
            "/{webhook_id:str}/rotate-secret",
            operation_id="RotateWebhookSecret",
            description=(
                "Issue a new secret (shown once); during `grace_seconds` every delivery is signed with both "
                "secrets."
            ),
            summary="Issue a new secret; the old one keeps signing for grace_seconds",
            status_code=200,
            responses=responses(404, 422, body=True, family="004"),
        )
        async def rotate(
            self, webhook_id: FromPath[IdText], data: JSONBody[RotateIn], org: NamedDependency[OrgScope]
        ) -> RotateOut:
            secret = (
                signing.check_secret(data.secret) if data.secret is not None else signing.generate_secret()
            )
            async with state.db.transaction() as conn:
                current = await store.get_endpoint(
                    conn, org.org_id, parse_id(webhook_id, "webhook_not_found"), lock=True
                )
                expires = (
                    store.utcnow() + datetime.timedelta(seconds=data.grace_seconds)
                    if data.grace_seconds
                    else None
                )
                row = await store.update_endpoint(
                    conn,
                    org.org_id,
                    parse_id(webhook_id, "webhook_not_found"),
                    secret=secret,
                    previous_secret=current.secret if expires else None,
                    previous_secret_expires_at=expires,
                )
            return RotateOut(
                id=row.id, secret=secret, previous_secret_expires_at=row.previous_secret_expires_at
            )

        @get(
            "/{webhook_id:str}/deliveries",
            operation_id="ListWebhookDeliveries",
            description=(
                "The endpoint's delivery log, newest first: event, attempts, status code of each attempt, "
                "next retry."
            ),
            summary="The endpoint's delivery log, newest first",
            responses=responses(404, family="004"),
        )
        async def deliveries(
            self,
            webhook_id: FromPath[IdText],
            org: NamedDependency[OrgScope],
            limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
            status: Annotated[
                Literal["pending", "delivered", "failed"] | None,
                QueryParameter(description="Only this status"),
            ] = None,
        ) -> DeliveryList:
            async with state.db.reading() as conn:
                await store.get_endpoint(conn, org.org_id, parse_id(webhook_id, "webhook_not_found"))
                rows = await store.list_deliveries(
                    conn, org.org_id, parse_id(webhook_id, "webhook_not_found"), limit=limit, status=status
                )
            return DeliveryList(data=[delivery_out(r) for r in rows])

        @post(
            "/deliveries/{delivery_id:str}/replay",
            operation_id="ReplayWebhookDelivery",
            description=(
                "Send a delivered or failed delivery again, with the same event id and body, on a fresh "
                "retry schedule."
            ),
            summary="Send a delivery again (same event id and body, a fresh retry schedule)",
            status_code=200,
            responses=responses(404, 409, 422, family="004"),
        )
        async def replay(self, delivery_id: FromPath[IdText], org: NamedDependency[OrgScope]) -> DeliveryOut:
            async with state.db.transaction() as conn:
                row = await store.replay(conn, org.org_id, parse_id(delivery_id, "delivery_not_found"))
            state.wake_worker()
            return delivery_out(row)

    class AlertsController(TenantController):
        path = "/v1/billing/alerts"
        tags = ["billing (004)"]
        opt = OPT

        async def _answer(self, conn: AsyncConnection, org_id: uuid.UUID) -> AlertsOut:
            account = await state.ledger.account(org_id, conn=conn)
            levels = await store.get_levels(conn, org_id, config.default_levels)
            units = currency_units(account.currency)
            thresholds = sorted(levels.thresholds, reverse=True)
            return AlertsOut(
                low_balance_threshold=ev.major(thresholds[0], units) if thresholds else None,
                thresholds=thresholds,
                currency=account.currency.upper(),
            )

        @get(
            "/",
            operation_id="GetBalanceAlerts",
            description=(
                "The free-balance levels that fire `billing.balance_low`, in both forms: "
                "`low_balance_threshold` (major units, the highest level) and `thresholds` (minor units)."
            ),
            summary="The free-balance levels that send billing.balance_low",
            responses=responses(404, family="004"),
        )
        async def get_alerts(self, org: NamedDependency[OrgScope]) -> AlertsOut:
            async with state.db.reading() as conn:
                return await self._answer(conn, org.org_id)

        @put(
            "/",
            operation_id="PutBalanceAlerts",
            description=(
                "Set the levels: document 004's `{low_balance_threshold}` (major units) or `{thresholds: "
                "[...]}` (minor units); both at once is 400, null or [] disables."
            ),
            summary="Set the levels: low_balance_threshold (major units) or thresholds (minor units)",
            responses=responses(404, body=True, family="004"),
        )
        async def put_alerts(
            self, request: Request[Any, Any, Any], data: JSONBody[AlertsIn], org: NamedDependency[OrgScope]
        ) -> AlertsOut:
            one = not isinstance(data.low_balance_threshold, msgspec.UnsetType)
            many = not isinstance(data.thresholds, msgspec.UnsetType)
            if one and many:
                raise ValidationFailed(
                    "send either low_balance_threshold (major units) or thresholds (minor units), not both",
                    code="conflicting_fields",
                    field="thresholds",
                )
            if not one and not many:
                raise ValidationFailed(
                    "send low_balance_threshold (major units) or thresholds (minor units)",
                    code="missing_field",
                    field="low_balance_threshold",
                )
            async with state.db.transaction() as conn:
                account = await state.ledger.lock(conn, org.org_id)
                if one:
                    levels = []
                    if data.low_balance_threshold is not None:
                        token = bytes(
                            msgspec.json.decode(
                                await request.body(), type=_RawThreshold
                            ).low_balance_threshold
                        )
                        field = "low_balance_threshold"
                        if len(token) > 24 or not _PLAIN_NUMBER.fullmatch(token):
                            raise ValidationFailed(
                                f"{field} must be a JSON number in major units without exponent (e.g. 10.50)",
                                field=field,
                            )
                        level = major_to_minor(token.decode(), currency_units(account.currency), field=field)
                        if level > MAX_AMOUNT:
                            raise ValidationFailed(f"{field} is too large", field=field)
                        levels = [level]
                else:
                    levels = list(data.thresholds or [])
                before = await store.get_levels(conn, org.org_id, config.default_levels)
                # New levels start armed: one the balance is already below fires when it is next
                # crossed on the way down, after the balance went back above it.
                await store.save_levels(
                    conn, org.org_id, store.Levels(thresholds=levels, fired=[], depleted=before.depleted)
                )
                await refresh(conn, org.org_id)
                return await self._answer(conn, org.org_id)

    return [WebhooksController, AlertsController]
