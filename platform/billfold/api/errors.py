"""One error envelope for every error status.

    {"trackingId": "trk_…", "code": "insufficient_funds", "message": "…",
     "error": {"code": "…", "message": "…", "fix": "…", "field": "…", "provider": "…", "providerCode": "…"}}

The tracking id is also sent as the ``X-Tracking-Id`` header and written to the log line, so an
operator can find the request a tenant reports. Extra top-level fields carry what a document
asks for (``next_action`` and ``client_secret`` on 3-D Secure, the balance on 402).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from advanced_alchemy.exceptions import IntegrityError as RepositoryIntegrityError
from advanced_alchemy.exceptions import NotFoundError as RepositoryNotFound
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import IntegrityError

from billfold.api import family_002, family_004
from billfold.errors import BillfoldError
from billfold.logs import ERROR_CODE, TRACKING_ID, new_tracking_id

logger = logging.getLogger("billfold.api")

TRACKING_HEADER = "X-Tracking-Id"

_BODY_FIELD = re.compile(r"(?:unknown|missing required) field `(?P<field>[^`]+)`")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_response(
    request: Request[Any, Any, Any],
    *,
    status_code: int,
    code: str,
    message: str,
    fix: str | None = None,
    field: str | None = None,
    provider: str | None = None,
    provider_code: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    scope: dict[str, Any] = request.scope  # type: ignore[assignment]
    # The request's own tracking id (its log line's) when the access log gave it one.
    tracking_id = scope.get(TRACKING_ID) or new_tracking_id()
    scope[ERROR_CODE] = code
    error: dict[str, Any] = {"code": code, "message": message}
    if fix:
        error["fix"] = fix
    if field:
        error["field"] = field
    if provider:
        error["provider"] = provider
    if provider_code:
        error["providerCode"] = provider_code
    family = _family(request)
    body: dict[str, Any]
    if family == family_002.FAMILY and status_code == 422:
        status_code = 400  # the product's errors have no 422: "understood but not possible" is a BadRequest
    if family == family_002.FAMILY:
        issues = None
        if status_code == 400 and code in DECODE_CODES:
            issues = [{"_tag": "Type", "path": field.split(".") if field else [], "message": message}]
        body = family_002.error_body(status_code, message, tracking_id, issues)
    elif family == family_004.FAMILY:
        body = _family_004_body(request, status_code, code, message, tracking_id, fix, field, extra or {})
    else:
        body = {"trackingId": tracking_id, "code": code, "message": message, "error": error}
        if extra:
            body.update({k: v for k, v in extra.items() if k not in body})
    level = logging.ERROR if status_code >= 500 else logging.INFO
    # A 4xx of a request the access log covers is said by its line (status, code, tracking id).
    if level == logging.ERROR or TRACKING_ID not in scope:
        logger.log(
            level,
            "%s %s -> %s %s tracking_id=%s%s",
            request.method,
            request.url.path,
            status_code,
            code,
            tracking_id,
            f" field={field}" if field else "",
        )
    return Response(
        content=body,
        status_code=status_code,
        headers={**(headers or {}), TRACKING_HEADER: tracking_id},
    )


DECODE_CODES = frozenset(
    {"validation_error", "invalid_json", "nesting_too_deep", "nul_character", "not_whole_cents"}
)
"""400s that mean the request did not decode into its schema (document 002's HttpApiDecodeError)."""
FAMILY_004_STATE_KEY = "billfold_family_004"
SHAPE_HEADER = "billfold-shape"
"""``Billfold-Shape: 004`` on a usage route: answer (and refuse) in document 004's shapes."""


def _family(request: Request[Any, Any, Any]) -> str | None:
    """The API document family of the route that failed (``opt={"family": ...}``), if any."""
    handler = request.scope.get("route_handler")
    if handler is None:
        return None
    family: str | None = handler.opt.get("family")
    # Billfold's own usage routes answer a product speaking 004 in 004's words when it asks.
    asks_004 = request.headers.get(SHAPE_HEADER, "").strip() == family_004.FAMILY
    if family is None and handler.opt.get("shape_header") and asks_004:
        return family_004.FAMILY
    return family


def _family_004_body(
    request: Request[Any, Any, Any],
    status_code: int,
    code: str,
    message: str,
    tracking_id: str,
    fix: str | None,
    field: str | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    context = request.app.state.get(FAMILY_004_STATE_KEY) or {}
    if status_code == 402 and code == "insufficient_funds":
        units = context.get("minor_units", {}).get(extra.get("currency"), 2)
        return family_004.insufficient_body(
            message,
            tracking_id,
            balance=family_004.major(int(extra.get("balance_cents", 0)), units),
            required=family_004.major(int(extra.get("required_cents", 0)), units),
            topup_url=context.get("topup_url"),
        )
    detail: dict[str, Any] = {}
    if field:
        detail["field"] = field
    if fix:
        detail["fix"] = fix
    return family_004.error_body(code, message, tracking_id, [detail] if detail else [])


def _billfold_error(request: Request[Any, Any, Any], exc: BillfoldError) -> Response[dict[str, Any]]:
    return error_response(
        request,
        status_code=exc.status_code,
        code=exc.code,
        message=exc.message,
        fix=exc.fix,
        field=exc.field,
        provider=exc.provider,
        provider_code=exc.provider_code,
        extra=exc.extra,
        headers=exc.headers,
    )


_PARAMETER_ERRORS = {
    "idempotency_key": ("invalid_idempotency_key", "Idempotency-Key"),
    "from_": ("validation_error", "from"),
}
"""Request parameters whose refusal has its own code, or whose Python name is not the name the
caller knows them by."""


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    field = None
    code = "validation_error"
    message = exc.detail or "the request did not match the expected schema"
    details = exc.extra if isinstance(exc.extra, list) else []
    if details and isinstance(details[0], dict):
        first = details[0]
        field = first.get("key") or None
        detail = str(first.get("message") or "")
        if field == "data" and first.get("source") == "body":
            # Litestar names the whole body `data`; name the offending field instead.
            named = _BODY_FIELD.search(detail)
            if named:
                field = named.group("field")
            elif detail == "'data'":
                field, detail = None, "a JSON request body is required"
        if field in _PARAMETER_ERRORS:
            code, field = _PARAMETER_ERRORS[field]
        if detail:
            message = f"{field}: {detail}" if field else detail
    return error_response(
        request,
        status_code=400,
        code=code,
        message=message,
        field=field,
        extra={"details": details} if len(details) > 1 else None,
    )


CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a request whose client went away before it was answered (logs only: nobody
is left to receive the response)."""
_CLIENT_DISCONNECTED = "client disconnected prematurely"  # what litestar's Request.stream raises


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    if exc.status_code == HTTP_500_INTERNAL_SERVER_ERROR and exc.detail == _CLIENT_DISCONNECTED:
        # Litestar reports a client that hung up before sending its whole body as a 500: it is not
        # a server error, and must not page anyone.
        return error_response(
            request,
            status_code=CLIENT_CLOSED_REQUEST,
            code="client_closed_request",
            message="the client closed the connection before sending the whole request",
        )
    if exc.status_code == HTTP_500_INTERNAL_SERVER_ERROR:
        # e.g. Litestar's ImproperlyConfiguredException: its detail is internal, never the caller's
        return _unhandled(request, exc)
    headers = dict(exc.headers or {})
    if exc.status_code == 429 and "Retry-After" not in headers:
        headers["Retry-After"] = headers.get("RateLimit-Reset", "1")
    return error_response(
        request,
        status_code=exc.status_code,
        code=_HTTP_CODES.get(exc.status_code, "http_error"),
        message=exc.detail,
        fix="Slow down and retry after the Retry-After seconds." if exc.status_code == 429 else None,
        headers=headers,
    )


def _unhandled(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    response = error_response(
        request,
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
        code="internal_error",
        message="an internal error occurred; quote the tracking id when reporting it",
    )
    logger.error(
        "unhandled error tracking_id=%s",
        response.headers[TRACKING_HEADER],
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return response


def _duplicate(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A write refused by a unique constraint (advanced-alchemy's DuplicateKeyError, or one raced
    past a service's own check): a conflict with what exists, never a server error."""
    return error_response(
        request,
        status_code=409,
        code="conflict",
        message="this conflicts with a record that already exists",
        fix="Read the existing record, or send a different identifier.",
    )


def _repository_not_found(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    return error_response(request, status_code=404, code="not_found", message="not found")


exception_handlers: ExceptionHandlersMap = {
    BillfoldError: _billfold_error,
    RepositoryIntegrityError: _duplicate,
    IntegrityError: _duplicate,
    RepositoryNotFound: _repository_not_found,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unhandled,
}
