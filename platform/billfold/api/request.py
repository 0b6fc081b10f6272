"""Request bodies: JSON only, decoded strictly into the route's declared type before any conversion.

Litestar decodes a body untyped and then converts it leniently ("100" becomes 100, 1e3 becomes
1000, a number of 100,000 digits becomes a Python int). Billfold's request class decodes it once,
with msgspec, straight into the route's declared Struct with ``strict=True``: types and bounds
(``billfold.fields``) are checked during decoding, so no field is ever converted before it is
known to be in range, and Litestar's own conversion then passes the Struct through unchanged.
A body that is not JSON (by content type) is 415; deeper nesting than MAX_NESTING is 400; a NUL
character in any string is 400 naming the field (PostgreSQL cannot store it).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.types import Empty

from billfold.errors import BillfoldError, ValidationFailed
from billfold.fields import MAX_NESTING

_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"(?:Object contains unknown field|unknown field) `(?P<field>[^`]+)`")
_MISSING = re.compile(r"missing required field `(?P<field>[^`]+)`")


class UnsupportedMediaType(BillfoldError):
    status_code = 415
    code = "unsupported_media_type"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def field_of(message: str) -> tuple[str | None, str]:
    """The offending field (dotted path) and the message without msgspec's path suffix."""
    field = None
    match = _PATH.search(message)
    if match:
        message = message[: match.start()]
        path = match.group("path")
        field = re.sub(r"^\.", "", path).replace("[", ".").replace("]", "") or None
    for pattern in (_UNKNOWN, _MISSING):
        named = pattern.search(message)
        if named:
            field = f"{field}.{named.group('field')}" if field else named.group("field")
    return field, message


def _depth_and_nul(value: Any) -> tuple[int, str | None]:
    """Nesting depth of a decoded JSON value and the path of the first string holding NUL.
    Iterative: a hostile document cannot exhaust the stack."""
    deepest = 0
    nul_at: str | None = None
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            return deepest, nul_at
        if isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                if nul_at is None and "\x00" in str(key):
                    # The object holding the key is named: the key itself would carry its NUL
                    # into the response and the log line.
                    nul_at = path
                stack.append((child, depth + 1, child_path))
        elif isinstance(item, list):
            for index, child in enumerate(item):
                stack.append((child, depth + 1, f"{path}.{index}" if path else str(index)))
        elif isinstance(item, str) and nul_at is None and "\x00" in item:
            nul_at = path
    return deepest, nul_at


class BillfoldRequest(Request[Any, Any, State]):
    """Litestar's Request with strict, bounded JSON bodies (see the module docstring)."""

    async def json(self) -> Any:
        if self._json is not Empty:
            return self._json
        body = await self.body()
        if not _is_json(self.headers.get("content-type", "")):
            raise UnsupportedMediaType(
                "the request body must be JSON (Content-Type: application/json)",
                fix="Send the body as JSON with `Content-Type: application/json`.",
            )
        target: Any = Any
        handler = self.scope.get("route_handler")
        data_field = getattr(handler, "parsed_data_field", None)
        if data_field is not None:
            target = data_field.annotation
        try:
            if body.count(b"{") + body.count(b"[") > MAX_NESTING or b"\\u0000" in body:
                self._check_shape(body)
            value = msgspec.json.decode(body or b"null", type=target, strict=True)
        except msgspec.ValidationError as exc:
            field, message = field_of(str(exc))
            raise ValidationFailed(f"{field}: {message}" if field else message, field=field) from None
        except msgspec.DecodeError as exc:
            raise ValidationFailed(f"the body is not valid JSON: {exc}", code="invalid_json") from None
        except RecursionError:
            raise self._too_deep() from None
        self._json = self._connection_state.json = value
        return value

    @staticmethod
    def _too_deep() -> ValidationFailed:
        return ValidationFailed(f"the body nests deeper than {MAX_NESTING} levels", code="nesting_too_deep")

    def _check_shape(self, body: bytes) -> None:
        try:
            raw = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise ValidationFailed(f"the body is not valid JSON: {exc}", code="invalid_json") from None
        except RecursionError:
            raise self._too_deep() from None
        depth, nul_at = _depth_and_nul(raw)
        if depth > MAX_NESTING:
            raise self._too_deep()
        if nul_at is not None:
            raise ValidationFailed(
                f"{nul_at or 'the body'}: text must not contain NUL characters",
                code="nul_character",
                field=nul_at or None,
            )
