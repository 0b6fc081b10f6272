"""Authentication: tenant API keys (Bearer or Token) and the operator's admin key."""

from __future__ import annotations

import hmac
import uuid
from typing import Any

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler

from billfold.errors import Forbidden, Unauthorized
from billfold.state import AppState


class Tenant(msgspec.Struct, frozen=True):
    """The organization the request's key belongs to."""

    org_id: uuid.UUID

    def require(self, org_id: uuid.UUID | str) -> uuid.UUID:
        """Refuse (403) a path that names another organization than the key's."""
        if str(org_id) != str(self.org_id):
            raise Forbidden(
                "this API key belongs to another organization",
                code="organization_mismatch",
                fix="Use the key of the organization named in the path.",
            )
        return self.org_id


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization")
    if not header:
        raise Unauthorized(
            "missing Authorization header",
            code="missing_api_key",
            fix="Send `Authorization: Bearer <key>` (or `Token <key>`).",
        )
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() not in ("bearer", "token") or not token:
        raise Unauthorized(
            "the Authorization header must be `Bearer <key>` or `Token <key>`",
            code="invalid_authorization_header",
        )
    return token


def app_state(connection: ASGIConnection[Any, Any, Any, Any]) -> AppState:
    state: AppState = connection.app.state["billfold"]
    return state


async def provide_tenant(request: Request[Any, Any, Any], app_state: NamedDependency[AppState]) -> Tenant:
    # Depending on `app_state` makes Litestar resolve the two dependencies one after the other,
    # not in a task group per request (measurable on the charge path).
    org_id = await app_state.orgs.authenticate(bearer_token(request))
    return Tenant(org_id=org_id)


def provide_state(request: Request[Any, Any, Any]) -> AppState:
    return app_state(request)


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Operator routes: the key must equal ``BILLFOLD_ADMIN_API_KEY``."""
    expected = app_state(connection).admin_api_key
    token = bearer_token(connection)
    if expected is None:
        raise Unauthorized(
            "operator routes are disabled",
            code="admin_disabled",
            fix="Set BILLFOLD_ADMIN_API_KEY in the server's environment.",
        )
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("invalid operator key", code="invalid_admin_key")
