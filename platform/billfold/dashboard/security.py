"""The dashboard's session and CSRF protection.

An operator signs in with an operator key (the bootstrap ``BILLFOLD_ADMIN_API_KEY`` or a named key).
The session is Litestar's session middleware with its server-side backend: the cookie
(``billfold_session``: http-only, SameSite=Lax, path ``/dashboard``, ``Secure`` in production) holds
only a random 32-byte session id, issued anew at each sign-in; the session itself (the key's label
and the key's hash, never the key) is in a file store shared by every worker of the host
(``BILLFOLD_SESSION_DIR``, by default ``billfold-dashboard-sessions`` in the temporary directory,
mode 0700). Every request checks that the key is still live (a revoked named key ends its sessions
at once); a session ends ``SESSION_SECONDS`` after sign-in.

CSRF tokens (Litestar's CSRF middleware, on the dashboard's routes only) are signed with
``BILLFOLD_SESSION_SECRET``; without it, with a key derived from ``BILLFOLD_ADMIN_API_KEY`` (so every
worker agrees); without either, with a random key of this process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.stores.file import FileStore
from sqlalchemy import select

from billfold.audit.service import BOOTSTRAP, AuditActor, operator_keys
from billfold.db import Database
from billfold.logs import TRACKING_ID, new_tracking_id
from billfold.orgs.keys import hash_key

logger = logging.getLogger("billfold.dashboard")

SECRET_ENV = "BILLFOLD_SESSION_SECRET"
SESSION_DIR_ENV = "BILLFOLD_SESSION_DIR"
SESSION_COOKIE = "billfold_session"
SESSION_STORE = "billfold_dashboard_sessions"
CSRF_COOKIE = "billfold_csrf"
SESSION_SECONDS = 8 * 3600
"""A session lasts eight hours from sign-in."""
PATH = "/dashboard"
_ROTATE = "billfold_dashboard_new_session"


class SignInRequired(Exception):
    """No live session: pages redirect to the sign-in form."""


def csrf_secret() -> str:
    configured = os.environ.get(SECRET_ENV)
    if configured:
        return hashlib.sha256(b"billfold dashboard csrf\x00" + configured.encode()).hexdigest()
    admin = os.environ.get("BILLFOLD_ADMIN_API_KEY")
    if admin:
        return hashlib.blake2b(b"billfold dashboard csrf", key=admin.encode()[:64]).hexdigest()
    return os.urandom(32).hex()


def session_store() -> FileStore:
    folder = Path(
        os.environ.get(SESSION_DIR_ENV) or Path(tempfile.gettempdir()) / "billfold-dashboard-sessions"
    )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return FileStore(folder, create_directories=True)


class _SessionBackend(ServerSideSessionBackend):
    """Litestar's server-side backend, with a new session id after sign-in (no fixation)."""

    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
        scope: dict[str, Any] = connection.scope  # type: ignore[assignment]
        if scope.get(_ROTATE) is True:
            scope[_ROTATE] = self.generate_session_id()
        rotated = scope.get(_ROTATE)
        if isinstance(rotated, str):
            return rotated
        return super().get_session_id(connection)


class _SessionConfig(ServerSideSessionConfig):
    _backend_class = _SessionBackend


def new_session(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Store this request's session under a new id (called at sign-in)."""
    connection.scope[_ROTATE] = True  # type: ignore[literal-required]


def session_config(*, production: bool) -> ServerSideSessionConfig:
    return _SessionConfig(
        key=SESSION_COOKIE,
        path=PATH,
        httponly=True,
        secure=production,
        samesite="lax",
        max_age=SESSION_SECONDS,
        store=SESSION_STORE,
    )


def csrf_config(*, production: bool) -> CSRFConfig:
    return CSRFConfig(
        secret=csrf_secret(),
        cookie_name=CSRF_COOKIE,
        cookie_path=PATH,
        cookie_secure=production,
        cookie_httponly=True,
        cookie_samesite="lax",
        header_name="x-csrftoken",
    )


class Operators:
    """Checks operator keys at sign-in and the session on every request."""

    def __init__(self, db: Database, identify: Any, bootstrap_key: str) -> None:
        self.db = db
        self._identify = identify
        self._bootstrap_hash = hash_key(bootstrap_key) if bootstrap_key else None

    async def sign_in(self, key: str) -> dict[str, Any] | None:
        """The session of an operator key, or None when it is not one."""
        if not key or len(key) > 512:
            return None
        label = await self._identify(key)
        if label is None:
            return None
        return {"label": label, "key_hash": hash_key(key), "at": int(time.time())}

    async def live(self, session: dict[str, Any]) -> str | None:
        """The label of a session whose key is still live and whose time is not up, else None."""
        label, key_hash, at = session.get("label"), session.get("key_hash"), session.get("at")
        if not isinstance(label, str) or not isinstance(key_hash, str) or not isinstance(at, int):
            return None
        if time.time() - at > SESSION_SECONDS:
            return None
        if label == BOOTSTRAP:
            expected = self._bootstrap_hash
            return label if expected and hmac.compare_digest(expected, key_hash) else None
        async with self.db.reading() as conn:
            found = (
                await conn.execute(
                    select(operator_keys.c.label).where(
                        operator_keys.c.key_hash == key_hash, operator_keys.c.revoked_at.is_(None)
                    )
                )
            ).scalar_one_or_none()
        return label if found == label else None


OPERATORS_STATE_KEY = "billfold_dashboard_operators"
LABEL_KEY = "billfold_dashboard_label"


async def dashboard_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Every page but sign-in: a live session (else :class:`SignInRequired`)."""
    operators: Operators = connection.app.state[OPERATORS_STATE_KEY]
    session = connection.scope.get("session")
    label = await operators.live(session) if isinstance(session, dict) else None
    if label is None:
        raise SignInRequired
    connection.scope.setdefault("state", {})[LABEL_KEY] = label


def dashboard_actor(connection: ASGIConnection[Any, Any, Any, Any]) -> AuditActor:
    """Who acts (``dashboard:<label>``) and the request's tracking id, for the audit row."""
    label = connection.scope.get("state", {})[LABEL_KEY]
    scope: dict[str, Any] = connection.scope  # type: ignore[assignment]
    tracking = scope.get(TRACKING_ID)
    if tracking is None:
        tracking = scope[TRACKING_ID] = new_tracking_id()
    return AuditActor(who=f"dashboard:{label}", tracking_id=tracking)
