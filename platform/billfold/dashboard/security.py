"""The dashboard's session and CSRF protection.

An operator signs in with an operator key (the bootstrap ``BILLFOLD_ADMIN_API_KEY`` or a named key).
The session is Litestar's session middleware with its client-side backend (``CookieBackendConfig``):
the session lives in the cookie ``billfold_session`` itself (http-only, SameSite=Lax, path
``/dashboard``, ``Secure`` in production), encrypted and authenticated with AES-GCM, so the browser
can neither read nor change it: a cookie that does not decrypt is no session. It holds the key's
label, the key's id (a named key's row id; for the bootstrap key a 64-bit fingerprint of its hash,
so a new ``BILLFOLD_ADMIN_API_KEY`` ends the old key's sessions) and the sign-in time, never the key
or its hash; a one-shot confirmation message (``flash``, at most :data:`FLASH_CHARACTERS`) may ride
along until the next page shows it. Nothing is kept on the server, so every worker of every host
accepts a session made by another, as long as they share the secret. SameSite is Lax rather than
Strict so that a link to a dashboard page followed from elsewhere (mail, chat) arrives signed in; the
forms are guarded by the CSRF token.

- A session ends ``SESSION_SECONDS`` after sign-in: the sign-in time is in the session and checked
  on every request (the cookie's ``Max-Age`` is the same length, but Litestar renews it with every
  response, so the sign-in time is what ends a session).
- Every request checks that the key is still live: revoking a named key ends its sessions at once.
  A session that fails a check is cleared (its cookie is deleted with the answer).
- Sign-out deletes the cookie in that browser. A copy of the cookie taken before still opens the
  dashboard until its time is up, its key is revoked or the secret changes: no server-side record
  exists to delete.

The secret (16, 24 or 32 bytes: AES-128, -192 or -256):

- ``BILLFOLD_SESSION_SECRET``, when set: hex (read first) or base64 (standard or URL-safe) of 16, 24
  or 32 bytes. Anything else stops start-up with an error that names the variable, never its value.
  Set it to keep sessions across restarts, or when servers are started other than by
  ``billfold serve`` (several hosts, or uvicorn run directly with several workers).
- Otherwise ``billfold serve`` makes one random 32-byte secret in its supervisor before any worker
  starts and passes it to them in ``BILLFOLD_SESSION_SECRET``: every worker, and every worker that a
  SIGHUP reload starts later, shares it, and a restart of ``billfold serve`` signs everyone out.
- An app built otherwise without the variable (``create_app`` in tests) has a random secret of its
  own.

The secret is never logged nor printed: the start-up summary does not show it.

CSRF tokens (Litestar's CSRF middleware, on the dashboard's routes only) are signed with a key
derived from ``BILLFOLD_SESSION_SECRET`` (so under ``billfold serve`` every worker agrees); without
it, with a key derived from ``BILLFOLD_ADMIN_API_KEY``; without either, with a random key of this
process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.exceptions import SerializationException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.session.client_side import ClientSideSessionBackend, CookieBackendConfig
from sqlalchemy import select

from billfold.audit.service import BOOTSTRAP, AuditActor, operator_keys
from billfold.db import Database
from billfold.logs import TRACKING_ID, new_tracking_id
from billfold.orgs.keys import hash_key

logger = logging.getLogger("billfold.dashboard")

SECRET_ENV = "BILLFOLD_SESSION_SECRET"
SECRET_BYTES = (16, 24, 32)
SESSION_COOKIE = "billfold_session"
CSRF_COOKIE = "billfold_csrf"
SESSION_SECONDS = 8 * 3600
"""A session lasts eight hours from sign-in."""
FLASH_CHARACTERS = 500
"""The longest confirmation message kept in the session (the cookie carries it)."""
PATH = "/dashboard"
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_MAKE_ONE = 'make one with `python -c "import secrets; print(secrets.token_hex(32))"`'

wall_clock: Callable[[], float] = time.time
"""Seconds since the epoch for session times: real time, not the business clock."""


class SignInRequired(Exception):
    """No live session: pages redirect to the sign-in form."""


class SessionSecretError(ValueError):
    """``BILLFOLD_SESSION_SECRET`` is not 16, 24 or 32 bytes in hex or base64."""


def parse_session_secret(value: str) -> bytes:
    """The bytes of a ``BILLFOLD_SESSION_SECRET`` value (hex, else base64), checked for length.

    Raises:
        SessionSecretError: not hex nor base64, or not 16, 24 or 32 bytes (the message never
            repeats the value).
    """
    text = value.strip()
    if _HEX.fullmatch(text):
        decoded = bytes.fromhex(text)
    else:
        try:
            decoded = base64.b64decode(
                text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True
            )
        except (binascii.Error, ValueError):
            raise SessionSecretError(f"{SECRET_ENV} is neither hex nor base64; {_MAKE_ONE}") from None
    if len(decoded) not in SECRET_BYTES:
        raise SessionSecretError(
            f"{SECRET_ENV} must be 16, 24 or 32 bytes, it is {len(decoded)}; {_MAKE_ONE}"
        )
    return decoded


def session_secret() -> bytes:
    """The key that encrypts session cookies: ``BILLFOLD_SESSION_SECRET``'s, else a random one."""
    configured = os.environ.get(SECRET_ENV)
    if configured:
        return parse_session_secret(configured)
    return os.urandom(32)


def share_session_secret() -> None:
    """``billfold serve``, before its workers start: check ``BILLFOLD_SESSION_SECRET``, or set it to
    a new random secret that every worker (and every worker a reload starts) inherits.

    Raises:
        SessionSecretError: the variable is set but not a valid secret.
    """
    configured = os.environ.get(SECRET_ENV)
    if configured:
        parse_session_secret(configured)
    else:
        os.environ[SECRET_ENV] = secrets.token_hex(32)


def csrf_secret() -> str:
    configured = os.environ.get(SECRET_ENV)
    if configured:
        return hashlib.sha256(b"billfold dashboard csrf\x00" + configured.encode()).hexdigest()
    admin = os.environ.get("BILLFOLD_ADMIN_API_KEY")
    if admin:
        return hashlib.blake2b(b"billfold dashboard csrf", key=admin.encode()[:64]).hexdigest()
    return os.urandom(32).hex()


class _CookieBackend(ClientSideSessionBackend):
    """Litestar's client-side backend, with two changes:

    - shared rather than copied: Litestar deep-copies a router (and its middleware) when it is
      registered, and the backend's AES-GCM cipher cannot be copied. The backend holds nothing but
      its config and the cipher, so every copy of the router may share it.
    - a malformed cookie is no session: Litestar 2.25 answers 500 to a cookie whose clear-text
      expiry part is not ``{"expires_at": <int>}`` (not JSON, no such key, or not a number: a
      ``DecodeError``, ``KeyError`` or ``TypeError`` out of its ``load_data``), which anyone can send.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> _CookieBackend:
        return self

    async def load_from_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
        try:
            return await super().load_from_connection(connection)
        except (SerializationException, KeyError, TypeError, ValueError):
            return {}


class _CookieConfig(CookieBackendConfig):
    _backend_class = _CookieBackend


def session_config(*, production: bool) -> CookieBackendConfig:
    return _CookieConfig(
        secret=session_secret(),
        key=SESSION_COOKIE,
        path=PATH,
        httponly=True,
        secure=production,
        samesite="lax",
        max_age=SESSION_SECONDS,
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


def _bootstrap_id(key_hash: str) -> str:
    """The bootstrap key's id in a session: a fingerprint of its hash (not enough to find the key)."""
    return hashlib.blake2b(key_hash.encode(), digest_size=8, person=b"bf-dashboard").hexdigest()


class Operators:
    """Checks operator keys at sign-in and the session on every request."""

    def __init__(self, db: Database, identify: Any, bootstrap_key: str) -> None:
        self.db = db
        self._identify = identify
        self._bootstrap_hash = hash_key(bootstrap_key) if bootstrap_key else None
        self._bootstrap_id = _bootstrap_id(self._bootstrap_hash) if self._bootstrap_hash else None

    async def sign_in(self, key: str) -> dict[str, Any] | None:
        """The session of an operator key (label, key id, sign-in time), or None when it is not one."""
        if not key or len(key) > 512:
            return None
        label = await self._identify(key)
        if label is None:
            return None
        key_hash = hash_key(key)
        if self._bootstrap_hash is not None and hmac.compare_digest(self._bootstrap_hash, key_hash):
            key_id = self._bootstrap_id
        else:
            async with self.db.reading() as conn:
                found = (
                    await conn.execute(
                        select(operator_keys.c.id).where(
                            operator_keys.c.key_hash == key_hash,
                            operator_keys.c.label == label,
                            operator_keys.c.revoked_at.is_(None),
                        )
                    )
                ).scalar_one_or_none()
            key_id = str(found) if found is not None else None
        if key_id is None:
            return None
        return {"label": label, "key": key_id, "at": int(wall_clock())}

    async def live(self, session: dict[str, Any]) -> str | None:
        """The label of a session whose key is still live and whose time is not up, else None."""
        label, key_id, at = session.get("label"), session.get("key"), session.get("at")
        if not isinstance(label, str) or not isinstance(key_id, str) or not isinstance(at, int):
            return None
        if wall_clock() - at >= SESSION_SECONDS:
            return None
        if label == BOOTSTRAP:
            expected = self._bootstrap_id
            return label if expected and hmac.compare_digest(expected, key_id) else None
        try:
            row_id = uuid.UUID(key_id)
        except ValueError:
            return None
        async with self.db.reading() as conn:
            found = (
                await conn.execute(
                    select(operator_keys.c.label).where(
                        operator_keys.c.id == row_id, operator_keys.c.revoked_at.is_(None)
                    )
                )
            ).scalar_one_or_none()
        return label if found == label else None


OPERATORS_STATE_KEY = "billfold_dashboard_operators"
LABEL_KEY = "billfold_dashboard_label"


async def signed_in(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The label of this request's live session; a session that is not live is cleared (the answer
    deletes its cookie) and None returned."""
    operators: Operators = connection.app.state[OPERATORS_STATE_KEY]
    session = connection.scope.get("session")
    if not isinstance(session, dict) or not session:
        return None
    label = await operators.live(session)
    if label is None:
        connection.clear_session()
    return label


async def dashboard_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Every page but sign-in: a live session (else :class:`SignInRequired`)."""
    label = await signed_in(connection)
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
