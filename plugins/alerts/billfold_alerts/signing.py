"""Endpoint secrets and the two signatures every delivery carries.

A secret is ``whsec_`` + base64 of 24 to 64 random bytes (Standard Webhooks' form); both signatures
are keyed with the decoded bytes:

- ``X-Billfold-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` (document 004's scheme);
- ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256 of
  "{id}.{timestamp}.{body}">`` (Standard Webhooks).

During a rotation's grace period each header carries one signature per secret (the new one first):
``sha256=<new>,sha256=<old>`` and ``v1,<new> v1,<old>``; a receiver accepts any that matches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from billfold import Unprocessable

PREFIX = "whsec_"
MIN_BYTES, MAX_BYTES = 24, 64
GENERATED_BYTES = 32


def generate_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(GENERATED_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret (its base64-decoded bytes)."""
    return base64.b64decode(secret.removeprefix(PREFIX))


def check_secret(secret: str, field: str = "secret") -> str:
    """A tenant's own secret, or 422 ``invalid_secret`` naming what is wrong."""
    fix = (
        f"Send `{PREFIX}` followed by the base64 of {MIN_BYTES} to {MAX_BYTES} random bytes, or leave it out."
    )
    if not secret.startswith(PREFIX):
        raise Unprocessable(f"{field} must start with {PREFIX}", code="invalid_secret", field=field, fix=fix)
    try:
        key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise Unprocessable(
            f"{field} must be {PREFIX} followed by standard base64",
            code="invalid_secret",
            field=field,
            fix=fix,
        ) from None
    if not MIN_BYTES <= len(key) <= MAX_BYTES:
        raise Unprocessable(
            f"{field} must encode {MIN_BYTES} to {MAX_BYTES} bytes, not {len(key)}",
            code="invalid_secret",
            field=field,
            fix=fix,
        )
    return secret


def signature_headers(
    body: bytes, message_id: str, timestamp: int, secrets_: Sequence[str]
) -> dict[str, str]:
    """The headers of one attempt: both schemes, one signature per secret."""
    keys = [secret_key(s) for s in secrets_]
    signed = f"{message_id}.{timestamp}.".encode() + body
    hex_signatures = ",".join("sha256=" + hmac.new(k, body, hashlib.sha256).hexdigest() for k in keys)
    standard = " ".join(
        "v1," + base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode() for k in keys
    )
    return {
        "X-Billfold-Signature": hex_signatures,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard,
    }
